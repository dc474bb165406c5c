#include "server/engine/data/labels.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <sstream>
#include <thread>
#include <tuple>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "server/engine/data/dataset_yaml.h"

namespace yolohook::data {
namespace {

constexpr double kTolerance = 1e-3;
constexpr char kCorrupt[] = "ignoring corrupt image/label: ";

// The outcome of checking one image.
struct Checked {
  bool ok = false;
  ImageRecord record;
  enum class Kind { kFound, kMissing, kEmpty } kind = Kind::kFound;
  int duplicates = 0;
  std::vector<std::string> warnings;
};

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) return false;
  *out = std::move(buffer).str();
  return true;
}

Checked CheckOne(const std::string& image, int nc) {
  Checked out;
  out.record.image = image;
  auto corrupt = [&](const std::string& what) {
    out.ok = false;
    out.warnings.push_back(absl::StrCat(kCorrupt, what));
    return out;
  };

  std::string bytes;
  if (!ReadFile(image, &bytes)) {
    return corrupt(absl::StrCat(image, ": cannot read the image file"));
  }
  if (bytes.empty()) return corrupt(absl::StrCat(image, ": empty image file"));
  try {
    const cv::Mat raw(1, static_cast<int>(bytes.size()), CV_8UC1, bytes.data());
    const cv::Mat decoded = cv::imdecode(raw, cv::IMREAD_COLOR);
    if (decoded.empty() || decoded.cols <= 0 || decoded.rows <= 0) {
      return corrupt(absl::StrCat(image, ": cannot decode the image"));
    }
    out.record.width = decoded.cols;
    out.record.height = decoded.rows;
  } catch (const cv::Exception& e) {
    return corrupt(
        absl::StrCat(image, ": cannot decode the image (", e.msg, ")"));
  }

  const std::string label_path = LabelPathFor(image);
  std::error_code ec;
  if (!std::filesystem::exists(label_path, ec)) {
    out.ok = true;
    out.kind = Checked::Kind::kMissing;
    return out;
  }
  std::string text;
  if (!ReadFile(label_path, &text)) {
    return corrupt(absl::StrCat(label_path, ": cannot read the label file"));
  }
  std::vector<std::string> duplicates;
  absl::StatusOr<std::vector<Label>> labels =
      ParseLabels(text, nc, label_path, &duplicates);
  if (!labels.ok()) {
    const std::string reason(labels.status().message());
    return corrupt(reason);
  }
  out.duplicates = static_cast<int>(duplicates.size());
  out.warnings = std::move(duplicates);
  out.record.labels = *std::move(labels);
  out.kind =
      out.record.labels.empty() ? Checked::Kind::kEmpty : Checked::Kind::kFound;
  out.ok = true;
  return out;
}

}  // namespace

absl::StatusOr<std::vector<Label>> ParseLabels(
    const std::string& text, int nc, const std::string& file,
    std::vector<std::string>* warnings) {
  std::vector<Label> labels;
  std::map<std::tuple<double, double, double, double, double>, int> seen;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    std::vector<absl::string_view> cols =
        absl::StrSplit(line, absl::ByAnyChar(" \t\r\f\v"), absl::SkipEmpty());
    if (cols.empty()) continue;
    const std::string where = absl::StrCat(file, ":", line_number, ": ");
    if (cols.size() != 5) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, "expected 5 columns (class xc yc w h), got ", cols.size()));
    }
    double v[5];
    for (int i = 0; i < 5; ++i) {
      if (!absl::SimpleAtod(cols[i], &v[i]) || !std::isfinite(v[i])) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, "column ", i + 1, " '", cols[i], "' is not a number"));
      }
    }
    if (v[0] != std::floor(v[0]) || v[0] < 0 || v[0] >= nc) {
      return absl::InvalidArgumentError(absl::StrCat(where, "class id ",
                                                     cols[0], " outside 0..",
                                                     nc - 1, " (nc=", nc, ")"));
    }
    static const char* const kNames[] = {"class", "xc", "yc", "w", "h"};
    for (int i = 1; i < 5; ++i) {
      if (v[i] < -kTolerance || v[i] > 1 + kTolerance) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, kNames[i], "=", cols[i],
                         " outside [0, 1] (coordinates must be normalised)"));
      }
    }
    if (v[3] <= 0 || v[4] <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "box width and height must be > 0"));
    }
    const auto key = std::make_tuple(v[0], v[1], v[2], v[3], v[4]);
    if (auto [it, inserted] = seen.emplace(key, line_number); !inserted) {
      if (warnings != nullptr) {
        warnings->push_back(
            absl::StrCat(where, "duplicate of line ", it->second, ", removed"));
      }
      continue;
    }
    const double x1 = std::clamp(v[1] - v[3] / 2, 0.0, 1.0);
    const double x2 = std::clamp(v[1] + v[3] / 2, 0.0, 1.0);
    const double y1 = std::clamp(v[2] - v[4] / 2, 0.0, 1.0);
    const double y2 = std::clamp(v[2] + v[4] / 2, 0.0, 1.0);
    if (x2 <= x1 || y2 <= y1) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "box lies outside the image"));
    }
    Label label;
    label.cls = static_cast<int>(v[0]);
    label.xc = static_cast<float>((x1 + x2) / 2);
    label.yc = static_cast<float>((y1 + y2) / 2);
    label.w = static_cast<float>(x2 - x1);
    label.h = static_cast<float>(y2 - y1);
    labels.push_back(label);
  }
  return labels;
}

std::string VerifyReport::Summary() const {
  return absl::StrCat(found + missing + empty, " images, ", missing + empty,
                      " backgrounds, ", corrupt, " corrupt");
}

absl::StatusOr<std::vector<ImageRecord>> VerifyDataset(
    const std::vector<std::string>& images, int nc, int threads,
    VerifyReport* report) {
  std::vector<Checked> checked(images.size());
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next++; i < images.size(); i = next++) {
      checked[i] = CheckOne(images[i], nc);
    }
  };
  const size_t n_threads =
      std::min<size_t>(static_cast<size_t>(std::max(threads, 1)),
                       std::max<size_t>(images.size(), 1));
  std::vector<std::thread> pool;
  for (size_t t = 1; t < n_threads; ++t) pool.emplace_back(work);
  work();
  for (std::thread& t : pool) t.join();

  VerifyReport local;
  std::vector<ImageRecord> records;
  std::vector<std::string> reasons;
  for (Checked& c : checked) {
    local.warnings.insert(local.warnings.end(),
                          std::make_move_iterator(c.warnings.begin()),
                          std::make_move_iterator(c.warnings.end()));
    if (!c.ok) {
      ++local.corrupt;
      if (reasons.size() < 3) reasons.push_back(local.warnings.back());
      continue;
    }
    local.duplicates += c.duplicates;
    switch (c.kind) {
      case Checked::Kind::kFound:
        ++local.found;
        break;
      case Checked::Kind::kMissing:
        ++local.missing;
        break;
      case Checked::Kind::kEmpty:
        ++local.empty;
        break;
    }
    records.push_back(std::move(c.record));
  }
  if (report != nullptr) *report = std::move(local);
  if (records.empty()) {
    if (images.empty()) {
      return absl::InvalidArgumentError("no images to verify");
    }
    return absl::InvalidArgumentError(
        absl::StrCat("no valid image among ", images.size(), ": ",
                     absl::StrJoin(reasons, "; ")));
  }
  return records;
}

}  // namespace yolohook::data
