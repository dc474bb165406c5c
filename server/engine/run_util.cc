#include "server/engine/run_util.h"

#include <cstdio>
#include <ctime>
#include <filesystem>
#include <opencv2/core.hpp>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace yolohook::engine {
namespace {

namespace fs = std::filesystem;

template <typename State>
absl::Status FireImpl(const RunOptions& run, Event event, State* state,
                      State* EventContext::*member) {
  if (run.callbacks == nullptr) return absl::OkStatus();
  EventContext ctx;
  ctx.event = event;
  ctx.*member = state;
  run.callbacks->Run(ctx);
  if (ctx.fail_reason) {
    return absl::AbortedError(absl::StrCat(
        "failed by a callback at ", EventName(event), ": ", *ctx.fail_reason));
  }
  return absl::OkStatus();
}

}  // namespace

int ConfigureThreads(int threads) {
  int n = threads > 0 ? threads
                      : static_cast<int>(std::thread::hardware_concurrency());
  if (n <= 0) n = 1;
  if (torch::get_num_threads() != n) torch::set_num_threads(n);
  cv::setNumThreads(n);
  return n;
}

absl::StatusOr<std::string> MakeRunDir(const Config& config, Mode mode) {
  fs::path project = config.project.empty()
                         ? fs::path(ResolveDataDir(config)) / "runs" / "detect"
                         : fs::path(config.project);
  std::string name =
      config.name.empty() ? std::string(ModeName(mode)) : config.name;
  fs::path dir = project / name;
  std::error_code ec;
  if (!config.exist_ok) {
    for (int n = 2; fs::exists(dir, ec); ++n)
      dir = project / absl::StrCat(name, n);
  }
  fs::create_directories(dir, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("cannot create run directory ",
                                            dir.string(), ": ", ec.message()));
  }
  return dir.string();
}

void Logger::operator()(absl::string_view line) const {
  if (!verbose_) return;
  while (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  if (run_.log) {
    run_.log(line);
  } else {
    std::fwrite(line.data(), 1, line.size(), stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);
  }
}

absl::Status Fire(const RunOptions& run, Event event, TrainerState* state) {
  return FireImpl(run, event, state, &EventContext::trainer);
}
absl::Status Fire(const RunOptions& run, Event event, ValidatorState* state) {
  return FireImpl(run, event, state, &EventContext::validator);
}
absl::Status Fire(const RunOptions& run, Event event, PredictorState* state) {
  return FireImpl(run, event, state, &EventContext::predictor);
}
absl::Status Fire(const RunOptions& run, Event event, ExporterState* state) {
  return FireImpl(run, event, state, &EventContext::exporter);
}

absl::Status CheckCancelled(const RunOptions& run) {
  if (run.cancel != nullptr && run.cancel->load(std::memory_order_relaxed)) {
    return absl::CancelledError("cancelled");
  }
  return absl::OkStatus();
}

torch::Tensor ImagesToTensor(const std::vector<data::Sample>& samples) {
  const int64_t b = static_cast<int64_t>(samples.size());
  const int64_t h = samples.front().image.rows;
  const int64_t w = samples.front().image.cols;
  auto bytes = torch::empty({b, h, w, 3}, torch::kUInt8);
  const int64_t per_image = h * w * 3;
  for (int64_t i = 0; i < b; ++i) {
    const cv::Mat& m = samples[i].image;
    cv::Mat c = m.isContinuous() ? m : m.clone();
    std::memcpy(bytes.data_ptr<uint8_t>() + i * per_image, c.data, per_image);
  }
  // BGR HWC bytes -> RGB CHW floats.
  return bytes.permute({0, 3, 1, 2})
      .flip({1})
      .to(torch::kFloat32)
      .div_(255.0f)
      .contiguous();
}

torch::Tensor ImageToTensor(const cv::Mat& bgr) {
  cv::Mat c = bgr.isContinuous() ? bgr : bgr.clone();
  auto bytes = torch::from_blob(c.data, {1, c.rows, c.cols, 3}, torch::kUInt8);
  return bytes.permute({0, 3, 1, 2})
      .flip({1})
      .to(torch::kFloat32)
      .div_(255.0f)
      .contiguous();
}

torch::Tensor TargetsToTensor(const std::vector<data::Sample>& samples) {
  int64_t n = 0;
  for (const auto& s : samples) n += static_cast<int64_t>(s.labels.size());
  auto t = torch::empty({n, 6}, torch::kFloat32);
  float* p = t.data_ptr<float>();
  for (size_t i = 0; i < samples.size(); ++i) {
    for (const data::Label& l : samples[i].labels) {
      *p++ = static_cast<float>(i);
      *p++ = static_cast<float>(l.cls);
      *p++ = l.xc;
      *p++ = l.yc;
      *p++ = l.w;
      *p++ = l.h;
    }
  }
  return t;
}

void UnLetterbox(std::vector<Box>& boxes, const data::LetterboxInfo& info,
                 int orig_width, int orig_height) {
  const float w = static_cast<float>(orig_width);
  const float h = static_cast<float>(orig_height);
  for (Box& b : boxes) {
    b.x1 = std::clamp((b.x1 - info.pad_w) / info.ratio, 0.0f, w);
    b.x2 = std::clamp((b.x2 - info.pad_w) / info.ratio, 0.0f, w);
    b.y1 = std::clamp((b.y1 - info.pad_h) / info.ratio, 0.0f, h);
    b.y2 = std::clamp((b.y2 - info.pad_h) / info.ratio, 0.0f, h);
  }
}

std::vector<Box> TensorToBoxes(const torch::Tensor& detections) {
  auto d = detections.to(torch::kFloat32).contiguous();
  std::vector<Box> boxes(d.size(0));
  const float* p = d.data_ptr<float>();
  for (auto& b : boxes) {
    b.x1 = p[0];
    b.y1 = p[1];
    b.x2 = p[2];
    b.y2 = p[3];
    b.conf = p[4];
    b.cls = static_cast<int>(p[5]);
    p += 6;
  }
  return boxes;
}

absl::Status Guard(absl::string_view what,
                   const std::function<absl::Status()>& fn) {
  try {
    return fn();
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat(what, ": ", e.what_without_backtrace()));
  } catch (const cv::Exception& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  }
}

std::optional<std::string> ScaleFromModelName(absl::string_view model) {
  absl::string_view m = model;
  if (!absl::ConsumePrefix(&m, "yolov8") || m.empty()) return std::nullopt;
  char scale = m[0];
  m.remove_prefix(1);
  if (scale != 'n' && scale != 's' && scale != 'm') return std::nullopt;
  if (!m.empty() && m != ".yaml" && m != ".pt") return std::nullopt;
  return std::string(1, scale);
}

std::string NowIso8601() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::map<std::string, std::string> ArgsMap(const Config& config) {
  std::map<std::string, std::string> out;
  for (auto& [k, v] : ConfigToPairs(config)) out.emplace(k, v);
  return out;
}

}  // namespace yolohook::engine
