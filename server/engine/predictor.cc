#include "server/engine/predictor.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/videoio.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "server/common/status_macros.h"
#include "server/engine/data/augment.h"
#include "server/engine/data/sources.h"
#include "server/engine/inference_model.h"
#include "server/engine/metrics/draw.h"
#include "server/engine/nn/ops.h"
#include "server/engine/run_util.h"

namespace yolohook::engine {
namespace {

namespace fs = std::filesystem;

// One input of a predict run: a file (image or video) or an in-memory image.
struct Entry {
  std::string path;
  bool video = false;
  const InputImage* memory = nullptr;
};

absl::StatusOr<std::vector<Entry>> ResolveSource(const Config& config,
                                                 const RunOptions& run,
                                                 std::string* type) {
  std::vector<Entry> out;
  if (!run.images.empty()) {
    *type = "memory";
    for (const InputImage& image : run.images)
      out.push_back({image.name, false, &image});
    return out;
  }
  YH_ASSIGN_OR_RETURN(ResolvedSource source,
                      yolohook::ResolveSource(config.source));
  *type = source.type;
  for (SourceFile& file : source.files)
    out.push_back({std::move(file.path), file.video});
  return out;
}

// A decoded input image waiting in a batch.
struct Frame {
  std::string path;
  cv::Mat image;
  int64_t frame_index = -1;  // video frame, -1 for still images
  std::string prefix;  // "image 1/3 path" or "video 1/1 (frame 3/90) path"
};

std::string Describe(const Result& r) {
  std::map<int, int> counts;
  for (const Box& b : r.boxes) ++counts[b.cls];
  if (counts.empty()) return "(no detections)";
  std::vector<std::string> parts;
  for (const auto& [cls, n] : counts) {
    std::string name = cls < static_cast<int>(r.names.size())
                           ? r.names[cls]
                           : absl::StrCat(cls);
    parts.push_back(absl::StrCat(n, " ", name, n > 1 ? "s" : ""));
  }
  return absl::StrJoin(parts, ", ");
}

class PredictRun {
 public:
  PredictRun(const Config& config, const RunOptions& run)
      : config_(config), run_(run), log_(run, config.verbose) {}

  absl::StatusOr<PredictSummary> Run() {
    ConfigureThreads(config_.threads);
    YH_ASSIGN_OR_RETURN(model_, InferenceModel::Load(config_.model));
    YH_ASSIGN_OR_RETURN(imgsz_, model_->InputSize(config_));
    nms_.conf = config_.ConfFor(Mode::kPredict);
    nms_.iou = config_.iou;
    nms_.max_det = config_.max_det;
    nms_.agnostic = config_.agnostic_nms;
    nms_.classes = config_.classes;
    std::vector<Entry> entries;
    if (run_.stream) {
      source_type_ = "stream";
    } else {
      YH_ASSIGN_OR_RETURN(entries, ResolveSource(config_, run_, &source_type_));
    }
    if (config_.save || config_.save_txt) {
      YH_ASSIGN_OR_RETURN(summary_.save_dir,
                          MakeRunDir(config_, Mode::kPredict));
      if (config_.save_txt)
        fs::create_directories(fs::path(summary_.save_dir) / "labels");
    }
    state_.source_type = source_type_;
    state_.save_dir = summary_.save_dir;
    state_.args = ArgsMap(config_);
    YH_RETURN_IF_ERROR(Fire(run_, Event::kOnPredictStart, &state_));

    absl::Status status = Guard("prediction", [&] {
      return run_.stream ? RunStream() : RunEntries(entries);
    });
    if (writer_.isOpened()) writer_.release();
    YH_RETURN_IF_ERROR(status);
    YH_RETURN_IF_ERROR(Fire(run_, Event::kOnPredictEnd, &state_));
    if (!summary_.save_dir.empty())
      log_(absl::StrCat("Results saved to ", summary_.save_dir));
    return std::move(summary_);
  }

 private:
  absl::Status RunEntries(const std::vector<Entry>& entries) {
    const size_t batch_size =
        model_->is_onnx() ? 1 : static_cast<size_t>(config_.batch);
    std::vector<Frame> batch;
    const size_t total = entries.size();
    for (size_t n = 0; n < total; ++n) {
      const Entry& e = entries[n];
      if (e.video) {
        YH_RETURN_IF_ERROR(Flush(batch));
        YH_RETURN_IF_ERROR(RunVideo(e, n + 1, total));
        continue;
      }
      Frame f;
      f.path = e.path;
      if (e.memory != nullptr) {
        f.image = Decode(e.memory->data);
      } else {
        f.image = cv::imread(e.path, cv::IMREAD_COLOR);
      }
      if (f.image.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(
            e.memory != nullptr ? "in-memory image '" : "image ", e.path,
            e.memory != nullptr ? "' is not a decodable JPEG or PNG"
                                : " cannot be decoded"));
      }
      f.prefix = absl::StrCat("image ", n + 1, "/", total, " ", e.path);
      batch.push_back(std::move(f));
      if (batch.size() >= batch_size) YH_RETURN_IF_ERROR(Flush(batch));
    }
    return Flush(batch);
  }

  // Frames from RunOptions::stream, one at a time as they come (a stream is
  // latency-bound: batching would hold frames back). They are numbered from 0
  // like video frames and saved like a video.
  absl::Status RunStream() {
    std::vector<Frame> batch;
    InputImage input;
    for (int64_t index = 0;; ++index) {
      YH_RETURN_IF_ERROR(CheckCancelled(run_));
      // A stream that ended because the run was cancelled says so.
      if (!run_.stream.next(&input)) return CheckCancelled(run_);
      Frame f;
      f.path = input.name.empty() ? "stream" : input.name;
      f.image = Decode(input.data);
      if (f.image.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("frame ", index, " ('", input.name,
                         "') is not a decodable JPEG or PNG"));
      }
      f.frame_index = index;
      f.prefix = absl::StrCat("frame ", index, " ", f.path);
      batch.push_back(std::move(f));
      YH_RETURN_IF_ERROR(Flush(batch));
    }
  }

  static cv::Mat Decode(const std::string& data) {
    if (data.empty()) return {};
    cv::Mat bytes(1, static_cast<int>(data.size()), CV_8U,
                  const_cast<char*>(data.data()));
    return cv::imdecode(bytes, cv::IMREAD_COLOR);
  }

  absl::Status RunVideo(const Entry& e, size_t n, size_t total) {
    cv::VideoCapture cap(e.path);
    if (!cap.isOpened()) {
      return absl::InvalidArgumentError(
          absl::StrCat("video ", e.path, " cannot be opened"));
    }
    const int64_t frames =
        static_cast<int64_t>(cap.get(cv::CAP_PROP_FRAME_COUNT));
    video_fps_ = cap.get(cv::CAP_PROP_FPS);
    std::vector<Frame> batch;
    cv::Mat image;
    for (int64_t index = 0; cap.read(image); ++index) {
      if (index % config_.vid_stride != 0) continue;
      YH_RETURN_IF_ERROR(CheckCancelled(run_));
      Frame f;
      f.path = e.path;
      f.image = image.clone();
      f.frame_index = index;
      f.prefix = absl::StrCat("video ", n, "/", total, " (frame ", index + 1,
                              "/", frames, ") ", e.path);
      batch.push_back(std::move(f));
      YH_RETURN_IF_ERROR(Flush(batch));
    }
    if (writer_.isOpened()) writer_.release();
    return absl::OkStatus();
  }

  absl::Status Flush(std::vector<Frame>& batch) {
    if (batch.empty()) return absl::OkStatus();
    YH_RETURN_IF_ERROR(CheckCancelled(run_));
    state_.paths.clear();
    state_.frames.clear();
    state_.frame_indices.clear();
    state_.strings.clear();
    state_.results.clear();
    for (const Frame& f : batch) {
      state_.paths.push_back(f.path);
      state_.frames.push_back(FrameView{f.image.rows, f.image.cols,
                                        static_cast<int64_t>(f.image.step[0]),
                                        f.image.data});
      state_.frame_indices.push_back(f.frame_index);
    }
    YH_RETURN_IF_ERROR(Fire(run_, Event::kOnPredictBatchStart, &state_));

    Stopwatch sw;
    std::vector<data::LetterboxInfo> boxes_info(batch.size());
    std::vector<torch::Tensor> inputs;
    for (size_t i = 0; i < batch.size(); ++i) {
      inputs.push_back(ImageToTensor(
          data::Letterbox(batch[i].image, imgsz_, &boxes_info[i])));
    }
    torch::Tensor images = torch::cat(inputs, 0);
    const double pre_ms = sw.Lap();
    YH_ASSIGN_OR_RETURN(torch::Tensor preds, model_->Forward(images));
    const double inf_ms = sw.Lap();
    std::vector<torch::Tensor> dets = nn::NonMaxSuppression(preds, nms_);
    const double n = static_cast<double>(batch.size());
    for (size_t i = 0; i < batch.size(); ++i) {
      Result r;
      r.path = batch[i].path;
      r.orig_height = batch[i].image.rows;
      r.orig_width = batch[i].image.cols;
      r.boxes = TensorToBoxes(dets[i]);
      UnLetterbox(r.boxes, boxes_info[i], r.orig_width, r.orig_height);
      r.names = model_->names();
      state_.results.push_back(std::move(r));
    }
    const double post_ms = sw.Lap();
    for (Result& r : state_.results)
      r.speed = Speed{pre_ms / n, inf_ms / n, post_ms / n};
    for (size_t i = 0; i < batch.size(); ++i) {
      const Result& r = state_.results[i];
      state_.strings.push_back(
          absl::StrFormat("%s: %dx%d %s, %.1fms", batch[i].prefix, imgsz_,
                          imgsz_, Describe(r), r.speed.inference_ms));
    }
    state_.seen += static_cast<int64_t>(batch.size());
    YH_RETURN_IF_ERROR(
        FireChecked(Event::kOnPredictPostprocessEnd, batch.size()));

    std::vector<Result> saved = state_.results;
    YH_RETURN_IF_ERROR(
        Save(batch, saved, /*final_pass=*/false, /*changed=*/false));
    YH_RETURN_IF_ERROR(FireChecked(Event::kOnPredictBatchEnd, batch.size()));
    YH_RETURN_IF_ERROR(Save(batch, state_.results, /*final_pass=*/true,
                            /*changed=*/!SameResults(saved, state_.results)));
    for (size_t i = 0; i < batch.size(); ++i) {
      log_(state_.strings[i]);
      if (run_.stream) {
        if (run_.stream.on_result) run_.stream.on_result(state_.results[i]);
      } else {
        summary_.results.push_back(state_.results[i]);
      }
    }
    ++state_.batch_index;
    batch.clear();
    return absl::OkStatus();
  }

  absl::Status FireChecked(Event event, size_t images) {
    YH_RETURN_IF_ERROR(Fire(run_, event, &state_));
    absl::Status valid = ValidateResults(
        state_.results, images, static_cast<int>(model_->names().size()));
    if (!valid.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("results replaced at ", EventName(event),
                       " are invalid: ", valid.message()));
    }
    return absl::OkStatus();
  }

  static bool SameResults(const std::vector<Result>& a,
                          const std::vector<Result>& b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
      if (a[i].boxes.size() != b[i].boxes.size()) return false;
      for (size_t j = 0; j < a[i].boxes.size(); ++j) {
        const Box& x = a[i].boxes[j];
        const Box& y = b[i].boxes[j];
        if (x.x1 != y.x1 || x.y1 != y.y1 || x.x2 != y.x2 || x.y2 != y.y2 ||
            x.conf != y.conf || x.cls != y.cls) {
          return false;
        }
      }
    }
    return true;
  }

  // Writes annotated images and label files. Still images are written after
  // on_predict_postprocess_end (as Ultralytics does) and rewritten only if
  // on_predict_batch_end changed their results; video frames are appended to
  // the output video once, with the final results.
  absl::Status Save(const std::vector<Frame>& batch,
                    const std::vector<Result>& results, bool final_pass,
                    bool changed) {
    if (summary_.save_dir.empty()) return absl::OkStatus();
    for (size_t i = 0; i < batch.size(); ++i) {
      const Frame& f = batch[i];
      const bool video = f.frame_index >= 0;
      if (final_pass ? !(video || changed) : video) continue;
      const Result& r = results[i];
      fs::path name = fs::path(f.path).filename();
      if (name.empty() || name == "." || name == "..") {
        name = absl::StrCat(
            "image", state_.seen - static_cast<int64_t>(batch.size()) + i + 1);
      }
      if (!IsImagePath(name.string()) && !video) name += ".jpg";
      if (config_.save_txt) {
        std::string stem = name.stem().string();
        if (video) stem += absl::StrCat("_", f.frame_index);
        std::ofstream out(fs::path(summary_.save_dir) / "labels" /
                          (stem + ".txt"));
        out << ResultToLabelText(r, config_.save_conf);
        if (!out) {
          return absl::InternalError(absl::StrCat(
              "cannot write labels for ", f.path, " in ", summary_.save_dir));
        }
      }
      if (!config_.save) continue;
      cv::Mat canvas = f.image.clone();
      metrics::DrawResult(
          canvas, r,
          metrics::DrawOptions{config_.show_labels, config_.show_conf,
                               config_.line_width});
      if (video) {
        YH_RETURN_IF_ERROR(WriteVideoFrame(name, canvas));
        continue;
      }
      std::string out = (fs::path(summary_.save_dir) / name).string();
      if (!cv::imwrite(out, canvas)) {
        return absl::InternalError(absl::StrCat("cannot write ", out));
      }
    }
    return absl::OkStatus();
  }

  absl::Status WriteVideoFrame(const fs::path& name, const cv::Mat& frame) {
    if (!writer_.isOpened()) {
      std::string out =
          (fs::path(summary_.save_dir) / name.stem()).string() + ".avi";
      double fps = video_fps_ > 0 ? video_fps_ / config_.vid_stride : 30.0;
      if (!writer_.open(out, cv::VideoWriter::fourcc('M', 'J', 'P', 'G'), fps,
                        frame.size())) {
        return absl::InternalError(absl::StrCat("cannot write video ", out));
      }
      writer_size_ = frame.size();
    }
    // Every frame of a video file has one size; a stream's frames need not.
    if (frame.size() != writer_size_) {
      cv::Mat resized;
      cv::resize(frame, resized, writer_size_);
      writer_.write(resized);
    } else {
      writer_.write(frame);
    }
    return absl::OkStatus();
  }

  Config config_;
  const RunOptions& run_;
  Logger log_;
  std::optional<InferenceModel> model_;
  int imgsz_ = 640;
  nn::NmsOptions nms_;
  std::string source_type_;
  cv::Size writer_size_;  // the output video's frame size
  PredictorState state_;
  PredictSummary summary_;
  cv::VideoWriter writer_;
  double video_fps_ = 0;
};

}  // namespace

absl::Status ValidateResults(const std::vector<Result>& results,
                             size_t expected_images, int num_classes) {
  if (results.size() != expected_images) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected ", expected_images,
                     " results (one per image), got ", results.size()));
  }
  for (size_t i = 0; i < results.size(); ++i) {
    for (size_t j = 0; j < results[i].boxes.size(); ++j) {
      const Box& b = results[i].boxes[j];
      auto where = [&] {
        return absl::StrCat("image ", i, " (", results[i].path, ") box ", j);
      };
      if (!std::isfinite(b.x1) || !std::isfinite(b.y1) ||
          !std::isfinite(b.x2) || !std::isfinite(b.y2) ||
          !std::isfinite(b.conf)) {
        return absl::InvalidArgumentError(
            absl::StrCat(where(), ": non-finite value"));
      }
      if (b.x2 < b.x1 || b.y2 < b.y1) {
        return absl::InvalidArgumentError(absl::StrCat(
            where(),
            ": corners out of order (x1 <= x2 and y1 <= y2 required)"));
      }
      if (b.conf < 0 || b.conf > 1) {
        return absl::InvalidArgumentError(
            absl::StrCat(where(), ": conf ", b.conf, " outside [0, 1]"));
      }
      if (b.cls < 0 || b.cls >= num_classes) {
        return absl::InvalidArgumentError(absl::StrCat(
            where(), ": class ", b.cls, " outside 0..", num_classes - 1));
      }
    }
  }
  return absl::OkStatus();
}

std::string ResultToLabelText(const Result& result, bool with_conf) {
  std::string out;
  const double w = std::max(result.orig_width, 1);
  const double h = std::max(result.orig_height, 1);
  for (const Box& b : result.boxes) {
    absl::StrAppendFormat(&out, "%d %g %g %g %g", b.cls, (b.x1 + b.x2) / 2 / w,
                          (b.y1 + b.y2) / 2 / h, (b.x2 - b.x1) / w,
                          (b.y2 - b.y1) / h);
    if (with_conf) absl::StrAppendFormat(&out, " %g", b.conf);
    out += "\n";
  }
  return out;
}

absl::StatusOr<PredictSummary> Predict(const Config& config,
                                       const RunOptions& run) {
  PredictRun predict(config, run);
  return predict.Run();
}

}  // namespace yolohook::engine
