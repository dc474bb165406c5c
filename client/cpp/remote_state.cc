#include "client/cpp/remote_state.h"

#include <google/protobuf/util/message_differencer.h>

#include <map>
#include <opencv2/imgcodecs.hpp>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/wire/conversions.h"

namespace yolohook {
namespace {

void FillPredictor(const v1::PredictorState& s, bool decode_images,
                   PredictorState& out, std::vector<std::string>& pixels) {
  out.source_type = s.source_type();
  out.save_dir = s.save_dir();
  out.batch_index = s.batch_index();
  out.seen = s.seen();
  out.paths.assign(s.paths().begin(), s.paths().end());
  out.strings.assign(s.strings().begin(), s.strings().end());
  out.frame_indices.assign(s.frame_indices().begin(), s.frame_indices().end());
  for (const v1::Result& r : s.results())
    out.results.push_back(wire::FromWire(r));
  if (!decode_images) return;
  // Decode every frame first: FrameViews point into `pixels`, which must not
  // reallocate afterwards.
  pixels.reserve(static_cast<size_t>(s.images_size()));
  std::vector<cv::Size> sizes;
  for (const v1::Image& image : s.images()) {
    const std::string& data = image.data();
    cv::Mat mat;
    if (!data.empty()) {
      try {
        mat = cv::imdecode(cv::Mat(1, static_cast<int>(data.size()), CV_8UC1,
                                   const_cast<char*>(data.data())),
                           cv::IMREAD_COLOR);
      } catch (const cv::Exception&) {
        mat = cv::Mat();
      }
    }
    if (!mat.empty() && !mat.isContinuous()) mat = mat.clone();
    pixels.emplace_back(
        mat.empty()
            ? std::string()
            : std::string(mat.ptr<char>(), mat.total() * mat.elemSize()));
    sizes.push_back(mat.empty() ? cv::Size() : mat.size());
  }
  for (size_t i = 0; i < pixels.size(); ++i) {
    FrameView view;
    if (!pixels[i].empty()) {
      view.height = sizes[i].height;
      view.width = sizes[i].width;
      view.step = static_cast<int64_t>(sizes[i].width) * 3;
      view.bgr = reinterpret_cast<const uint8_t*>(pixels[i].data());
    }
    out.frames.push_back(view);
  }
}

ExporterState ExporterFromWire(const v1::ExporterState& s) {
  ExporterState out;
  out.file = s.file();
  out.format = s.format();
  out.imgsz = s.imgsz();
  out.metadata.insert(s.metadata().begin(), s.metadata().end());
  out.output = s.output();
  return out;
}

// Keys of `after` that are new or changed relative to `before`.
template <typename M>
void ChangedValues(const std::map<std::string, double>& before,
                   const std::map<std::string, double>& after, M* out) {
  for (const auto& [key, value] : after) {
    auto it = before.find(key);
    // NaN is never equal to itself: a callback leaving NaN in place is no
    // change.
    if (it != before.end() &&
        (it->second == value || (value != value && it->second != it->second)))
      continue;
    (*out)[key] = value;
  }
}

bool SameResults(const std::vector<Result>& a, const std::vector<Result>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!google::protobuf::util::MessageDifferencer::Equals(wire::ToWire(a[i]),
                                                            wire::ToWire(b[i])))
      return false;
  }
  return true;
}

}  // namespace

absl::Status StateFromEvent(const v1::Event& event, RemoteEventState& state,
                            bool decode_images) {
  absl::StatusOr<Event> e = EventFromName(event.name());
  if (!e.ok()) return e.status();
  state.ctx = EventContext();
  state.ctx.event = *e;
  const std::map<std::string, std::string> args(event.args().begin(),
                                                event.args().end());
  const Stage stage = StageOf(*e);
  auto mismatch = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat("event ", event.name(), " (job ", event.job_id(), ", seq ",
                     event.seq(), ") carries the state of another stage"));
  };
  switch (stage) {
    case Stage::kTrainer:
      if (event.has_validator() || event.has_predictor() ||
          event.has_exporter())
        return mismatch();
      state.trainer = wire::TrainerFromWire(event.trainer());
      state.trainer.args = args;
      state.ctx.trainer = &state.trainer;
      break;
    case Stage::kValidator:
      if (event.has_trainer() || event.has_predictor() || event.has_exporter())
        return mismatch();
      state.validator = wire::ValidatorFromWire(event.validator());
      state.validator.args = args;
      state.ctx.validator = &state.validator;
      break;
    case Stage::kPredictor:
      if (event.has_trainer() || event.has_validator() || event.has_exporter())
        return mismatch();
      state.predictor = PredictorState();
      FillPredictor(event.predictor(), decode_images, state.predictor,
                    state.frame_pixels);
      state.predictor.args = args;
      state.ctx.predictor = &state.predictor;
      break;
    case Stage::kExporter:
      if (event.has_trainer() || event.has_validator() || event.has_predictor())
        return mismatch();
      state.exporter = ExporterFromWire(event.exporter());
      state.exporter.args = args;
      state.ctx.exporter = &state.exporter;
      break;
  }
  return absl::OkStatus();
}

std::vector<v1::Mutation> DiffMutations(const RemoteEventState& before,
                                        const RemoteEventState& after) {
  std::vector<v1::Mutation> out;
  const EventContext& b = before.ctx;
  const EventContext& a = after.ctx;
  if (a.predictor != nullptr && b.predictor != nullptr &&
      !SameResults(b.predictor->results, a.predictor->results)) {
    v1::Mutation m;
    for (const Result& r : a.predictor->results)
      *m.mutable_replace_results()->add_results() = wire::ToWire(r);
    out.push_back(std::move(m));
  }
  if (a.trainer != nullptr && b.trainer != nullptr) {
    if (a.trainer->stop && !b.trainer->stop) {
      v1::Mutation m;
      m.mutable_stop_training()->set_reason(
          absl::StrCat("stopped by a remote callback at ", EventName(a.event)));
      out.push_back(std::move(m));
    }
    v1::Mutation hyp;
    ChangedValues(b.trainer->hyperparameters, a.trainer->hyperparameters,
                  hyp.mutable_set_hyperparameters()->mutable_values());
    if (!hyp.set_hyperparameters().values().empty())
      out.push_back(std::move(hyp));
    v1::Mutation log;
    ChangedValues(b.trainer->logged_metrics, a.trainer->logged_metrics,
                  log.mutable_log_metrics()->mutable_metrics());
    if (!log.log_metrics().metrics().empty()) out.push_back(std::move(log));
  }
  if (a.fail_reason && !b.fail_reason) {
    v1::Mutation m;
    m.mutable_fail_job()->set_reason(*a.fail_reason);
    out.push_back(std::move(m));
  }
  return out;
}

}  // namespace yolohook
