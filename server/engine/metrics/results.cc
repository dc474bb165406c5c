#include "server/engine/metrics/results.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "opencv2/core.hpp"
#include "opencv2/imgcodecs.hpp"
#include "opencv2/imgproc.hpp"
#include "server/common/status_macros.h"
#include "server/engine/metrics/metrics.h"

namespace yolohook::metrics {
namespace {

constexpr char kEpoch[] = "epoch";
constexpr char kTime[] = "time";

std::string FormatValue(double value) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "%.6g", value);
  return buffer;
}

// Parses a whole field as a number (strtod's syntax, including nan and inf).
std::optional<double> ParseNumber(const std::string& text) {
  if (text.empty()) return std::nullopt;
  errno = 0;
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size()) return std::nullopt;
  return value;
}

bool ValidKey(const std::string& key) {
  return !key.empty() && key.find_first_of(",\"\r\n") == std::string::npos;
}

absl::Status FileError(int error_number, absl::string_view what,
                       const std::string& path) {
  return absl::ErrnoToStatus(error_number, absl::StrCat(what, " ", path));
}

}  // namespace

const std::vector<std::string>& StandardResultColumns() {
  static const std::vector<std::string>* const kColumns =
      new std::vector<std::string>{
          kEpoch,
          kTime,
          "train/box_loss",
          "train/cls_loss",
          "train/dfl_loss",
          "metrics/precision(B)",
          "metrics/recall(B)",
          "metrics/mAP50(B)",
          "metrics/mAP50-95(B)",
          "val/box_loss",
          "val/cls_loss",
          "val/dfl_loss",
          "lr/pg0",
          "lr/pg1",
          "lr/pg2",
      };
  return *kColumns;
}

ResultsCsv::ResultsCsv(std::string path)
    : path_(std::move(path)), columns_(StandardResultColumns()) {}

absl::Status ResultsCsv::Load() {
  std::error_code ec;
  if (!std::filesystem::exists(path_, ec)) {
    columns_ = StandardResultColumns();
    rows_.clear();
    written_ = false;
    return absl::OkStatus();
  }
  if (std::filesystem::is_directory(path_, ec)) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read ", path_, ": is a directory"));
  }
  std::ifstream in(path_);
  if (!in) return FileError(errno, "cannot read", path_);

  std::vector<std::string> header;
  std::vector<std::map<std::string, double>> rows;
  std::string line;
  int line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    std::vector<std::string> fields;
    for (absl::string_view field : absl::StrSplit(line, ',')) {
      fields.emplace_back(absl::StripAsciiWhitespace(field));
    }
    if (header.empty()) {
      std::set<std::string> seen;
      for (const std::string& name : fields) {
        if (name.empty() || !seen.insert(name).second) {
          return absl::InvalidArgumentError(
              absl::StrCat(path_, ":", line_number, ": bad header column '",
                           name, "' (empty or repeated)"));
        }
      }
      if (fields[0] != kEpoch) {
        return absl::InvalidArgumentError(absl::StrCat(
            path_, ":", line_number, ": header must start with 'epoch', got '",
            fields[0], "'"));
      }
      header = std::move(fields);
      continue;
    }
    if (fields.size() != header.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ":", line_number, ": ", fields.size(),
                       " fields where the header has ", header.size()));
    }
    std::map<std::string, double> row;
    for (size_t i = 0; i < fields.size(); ++i) {
      if (fields[i].empty()) continue;
      const std::optional<double> value = ParseNumber(fields[i]);
      if (!value) {
        return absl::InvalidArgumentError(
            absl::StrCat(path_, ":", line_number, ": column '", header[i],
                         "': '", fields[i], "' is not a number"));
      }
      row[header[i]] = *value;
    }
    rows.push_back(std::move(row));
  }
  if (in.bad()) return FileError(errno, "cannot read", path_);

  std::vector<std::string> columns = StandardResultColumns();
  for (const std::string& name : header) {
    if (std::find(columns.begin(), columns.end(), name) == columns.end()) {
      columns.push_back(name);
    }
  }
  // A file in another layout (older columns, other order) is rewritten in
  // ours at the next Append.
  written_ = !header.empty() && header == columns;
  columns_ = std::move(columns);
  rows_ = std::move(rows);
  return absl::OkStatus();
}

absl::Status ResultsCsv::Append(int epoch, double time_seconds,
                                const std::map<std::string, double>& values) {
  if (epoch < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("results.csv epoch must be >= 1, got ", epoch));
  }
  std::map<std::string, double> row;
  std::vector<std::string> new_columns;
  for (const auto& [key, value] : values) {
    if (!ValidKey(key)) {
      return absl::InvalidArgumentError(
          absl::StrCat("results.csv column name '", key,
                       "' is empty or holds a comma, quote or line break"));
    }
    if (key == kEpoch || key == kTime) continue;
    row[key] = value;
    if (std::find(columns_.begin(), columns_.end(), key) == columns_.end()) {
      new_columns.push_back(key);
    }
  }
  row[kEpoch] = epoch;
  row[kTime] = time_seconds;

  if (new_columns.empty() && written_) {
    YH_RETURN_IF_ERROR(AppendLine(FormatRow(row)));
    rows_.push_back(std::move(row));
    return absl::OkStatus();
  }
  const size_t old_columns = columns_.size();
  columns_.insert(columns_.end(), new_columns.begin(), new_columns.end());
  rows_.push_back(std::move(row));
  const absl::Status status = WriteAll();
  if (!status.ok()) {
    columns_.resize(old_columns);
    rows_.pop_back();
    return status;
  }
  written_ = true;
  return absl::OkStatus();
}

std::string ResultsCsv::FormatHeader() const {
  return absl::StrCat(absl::StrJoin(columns_, ","), "\n");
}

std::string ResultsCsv::FormatRow(
    const std::map<std::string, double>& row) const {
  std::string line;
  for (size_t i = 0; i < columns_.size(); ++i) {
    if (i > 0) line += ',';
    const auto it = row.find(columns_[i]);
    if (it != row.end()) line += FormatValue(it->second);
  }
  line += '\n';
  return line;
}

absl::Status ResultsCsv::WriteAll() const {
  std::string text = FormatHeader();
  for (const auto& row : rows_) text += FormatRow(row);
  // Write a sibling and rename it so a reader never sees half a file.
  const std::string tmp = path_ + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return FileError(errno, "cannot write", tmp);
    out << text;
    out.flush();
    if (!out) return FileError(errno, "cannot write", tmp);
  }
  if (std::rename(tmp.c_str(), path_.c_str()) != 0) {
    const int error_number = errno;
    std::remove(tmp.c_str());
    return FileError(error_number, "cannot write", path_);
  }
  return absl::OkStatus();
}

absl::Status ResultsCsv::AppendLine(const std::string& line) const {
  std::ofstream out(path_, std::ios::binary | std::ios::app);
  if (!out) return FileError(errno, "cannot append to", path_);
  out << line;
  out.flush();
  if (!out) return FileError(errno, "cannot append to", path_);
  return absl::OkStatus();
}

namespace {

constexpr int kPanelWidth = 320;
constexpr int kPanelHeight = 240;
constexpr int kPanelsPerRow = 5;
// Plot area inside a panel.
constexpr int kLeft = 62;
constexpr int kRight = 12;
constexpr int kTop = 30;
constexpr int kBottom = 30;

const cv::Scalar kWhite(255, 255, 255);
const cv::Scalar kBlack(0, 0, 0);
const cv::Scalar kGray(150, 150, 150);
const cv::Scalar kLightGray(225, 225, 225);
const cv::Scalar kLineColor(180, 119, 31);   // blue
const cv::Scalar kTrendColor(14, 127, 255);  // orange

std::string Tick(double value) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.3g", value);
  return buffer;
}

void PutText(cv::Mat& image, const std::string& text, cv::Point origin,
             double scale, const cv::Scalar& color) {
  cv::putText(image, text, origin, cv::FONT_HERSHEY_SIMPLEX, scale, color, 1,
              cv::LINE_AA);
}

int TextWidth(const std::string& text, double scale) {
  int baseline = 0;
  return cv::getTextSize(text, cv::FONT_HERSHEY_SIMPLEX, scale, 1, &baseline)
      .width;
}

// Draws one column's panel with its top-left corner at `origin`.
void DrawPanel(cv::Mat& image, cv::Point origin, const std::string& title,
               const std::vector<double>& epochs,
               const std::vector<double>& values) {
  const double title_scale = 0.5;
  std::string shown = title;
  while (shown.size() > 4 && TextWidth(shown, title_scale) > kPanelWidth - 10) {
    shown = shown.substr(0, shown.size() - 4) + "..";
  }
  PutText(
      image, shown,
      origin + cv::Point((kPanelWidth - TextWidth(shown, title_scale)) / 2, 20),
      title_scale, kBlack);

  const cv::Rect area(origin.x + kLeft, origin.y + kTop,
                      kPanelWidth - kLeft - kRight,
                      kPanelHeight - kTop - kBottom);
  cv::rectangle(image, area, kGray, 1);

  std::vector<std::pair<double, double>> points;
  for (size_t i = 0; i < values.size(); ++i) {
    if (std::isfinite(values[i]) && std::isfinite(epochs[i])) {
      points.emplace_back(epochs[i], values[i]);
    }
  }
  if (points.empty()) {
    const std::string text = "no data";
    PutText(image, text,
            cv::Point(area.x + (area.width - TextWidth(text, 0.45)) / 2,
                      area.y + area.height / 2),
            0.45, kGray);
    return;
  }

  double x_min = points.front().first;
  double x_max = x_min;
  double y_min = points.front().second;
  double y_max = y_min;
  for (const auto& [x, y] : points) {
    x_min = std::min(x_min, x);
    x_max = std::max(x_max, x);
    y_min = std::min(y_min, y);
    y_max = std::max(y_max, y);
  }
  if (x_max - x_min <= 0) {
    x_min -= 1;
    x_max += 1;
  }
  if (y_max - y_min <= 1e-12 * std::max(1.0, std::abs(y_max))) {
    const double pad = y_max != 0 ? std::abs(y_max) * 0.1 : 1.0;
    y_min -= pad;
    y_max += pad;
  }
  const double margin = (y_max - y_min) * 0.05;
  const double y_lo = y_min - margin;
  const double y_hi = y_max + margin;

  auto to_pixel = [&](double x, double y) {
    const double fx = (x - x_min) / (x_max - x_min);
    const double fy = (y - y_lo) / (y_hi - y_lo);
    return cv::Point(
        area.x + static_cast<int>(std::lround(fx * (area.width - 1))),
        area.y + area.height - 1 -
            static_cast<int>(std::lround(fy * (area.height - 1))));
  };

  // Horizontal grid lines with value labels at min, middle and max.
  for (int i = 0; i < 3; ++i) {
    const double y = y_min + (y_max - y_min) * i / 2.0;
    const cv::Point p = to_pixel(x_min, y);
    cv::line(image, cv::Point(area.x + 1, p.y),
             cv::Point(area.x + area.width - 2, p.y), kLightGray, 1);
    const std::string label = Tick(y);
    PutText(image, label,
            cv::Point(area.x - 4 - TextWidth(label, 0.38), p.y + 4), 0.38,
            kBlack);
  }
  // Epoch range under the x axis.
  const std::string first = Tick(x_min);
  const std::string last = Tick(x_max);
  const int label_y = area.y + area.height + 16;
  PutText(image, first, cv::Point(area.x, label_y), 0.38, kBlack);
  PutText(image, last,
          cv::Point(area.x + area.width - TextWidth(last, 0.38), label_y), 0.38,
          kBlack);
  const std::string axis = "epoch";
  PutText(image, axis,
          cv::Point(area.x + (area.width - TextWidth(axis, 0.38)) / 2, label_y),
          0.38, kGray);

  // The values, joined in epoch order where consecutive rows both have one.
  for (size_t i = 0; i + 1 < values.size(); ++i) {
    if (std::isfinite(values[i]) && std::isfinite(values[i + 1]) &&
        std::isfinite(epochs[i]) && std::isfinite(epochs[i + 1])) {
      cv::line(image, to_pixel(epochs[i], values[i]),
               to_pixel(epochs[i + 1], values[i + 1]), kLineColor, 2,
               cv::LINE_AA);
    }
  }
  for (const auto& [x, y] : points) {
    cv::circle(image, to_pixel(x, y), 3, kLineColor, cv::FILLED, cv::LINE_AA);
  }
  // A smoothed trend once there are enough points for it to mean something.
  if (points.size() >= 10) {
    std::vector<double> ys;
    for (const auto& point : points) ys.push_back(point.second);
    const std::vector<double> trend = Smooth(ys, 0.1);
    for (size_t i = 0; i + 1 < points.size(); i += 2) {
      cv::line(image, to_pixel(points[i].first, trend[i]),
               to_pixel(points[i + 1].first, trend[i + 1]), kTrendColor, 1,
               cv::LINE_AA);
    }
  }
}

}  // namespace

absl::Status PlotResults(const std::string& csv_path,
                         const std::string& png_path) {
  std::error_code ec;
  if (!std::filesystem::exists(csv_path, ec)) {
    return absl::NotFoundError(
        absl::StrCat("results file not found: ", csv_path));
  }
  ResultsCsv csv(csv_path);
  YH_RETURN_IF_ERROR(csv.Load());
  if (csv.rows().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(csv_path, " has no rows to plot"));
  }

  std::vector<std::string> panels;
  for (const std::string& column : csv.columns()) {
    if (column != kEpoch && column != kTime) panels.push_back(column);
  }
  const int panel_rows =
      static_cast<int>((panels.size() + kPanelsPerRow - 1) / kPanelsPerRow);
  const int panel_cols =
      std::min(static_cast<int>(panels.size()), kPanelsPerRow);

  std::vector<double> epochs;
  for (size_t i = 0; i < csv.rows().size(); ++i) {
    const auto& row = csv.rows()[i];
    const auto it = row.find(kEpoch);
    epochs.push_back(it != row.end() ? it->second : static_cast<double>(i + 1));
  }

  try {
    cv::Mat image(std::max(panel_rows, 1) * kPanelHeight,
                  std::max(panel_cols, 1) * kPanelWidth, CV_8UC3, kWhite);
    for (size_t p = 0; p < panels.size(); ++p) {
      std::vector<double> values;
      for (const auto& row : csv.rows()) {
        const auto it = row.find(panels[p]);
        values.push_back(it != row.end() ? it->second : std::nan(""));
      }
      const cv::Point origin(
          static_cast<int>(p % kPanelsPerRow) * kPanelWidth,
          static_cast<int>(p / kPanelsPerRow) * kPanelHeight);
      DrawPanel(image, origin, panels[p], epochs, values);
    }
    if (!cv::imwrite(png_path, image)) {
      const std::filesystem::path parent =
          std::filesystem::path(png_path).parent_path();
      if (!parent.empty() && !std::filesystem::is_directory(parent, ec)) {
        return absl::NotFoundError(absl::StrCat(
            "cannot write ", png_path, ": no directory ", parent.string()));
      }
      return absl::InternalError(absl::StrCat("cannot write ", png_path));
    }
  } catch (const cv::Exception& e) {
    return absl::InternalError(
        absl::StrCat("cannot draw ", png_path, ": ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace yolohook::metrics
