// Conversions between the engine's state structs and the yolohook.v1 wire
// messages, and the rules for interceptors' mutations.
#include "server/events/conversions.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/common/config.h"
#include "server/common/limits.h"
#include "server/common/status_macros.h"
#include "server/events/event_bus.h"

namespace yolohook::events {
namespace {

template <typename K, typename V, typename M>
void MapToWire(const std::map<K, V>& in, M* out) {
  for (const auto& [key, value] : in) (*out)[key] = value;
}

void SpeedToWire(const Speed& speed, v1::Speed* out) {
  out->set_preprocess_ms(speed.preprocess_ms);
  out->set_inference_ms(speed.inference_ms);
  out->set_postprocess_ms(speed.postprocess_ms);
}

Speed SpeedFromWire(const v1::Speed& speed) {
  Speed out;
  out.preprocess_ms = speed.preprocess_ms();
  out.inference_ms = speed.inference_ms();
  out.postprocess_ms = speed.postprocess_ms();
  return out;
}

void TrainerToWire(const TrainerState& s, v1::TrainerState* out) {
  out->set_epoch(s.epoch);
  out->set_epochs(s.epochs);
  out->set_start_epoch(s.start_epoch);
  out->set_batch_index(s.batch_index);
  out->set_num_batches(s.num_batches);
  out->set_iteration(s.iteration);
  out->set_batch_size(s.batch_size);
  out->set_imgsz(s.imgsz);
  out->set_loss(s.loss);
  for (double v : s.loss_items) out->add_loss_items(v);
  for (double v : s.tloss) out->add_tloss(v);
  for (const std::string& name : s.loss_names) out->add_loss_names(name);
  MapToWire(s.metrics, out->mutable_metrics());
  out->set_fitness(s.fitness);
  out->set_best_fitness(s.best_fitness);
  MapToWire(s.lr, out->mutable_lr());
  out->set_epoch_time(s.epoch_time);
  out->set_elapsed(s.elapsed);
  out->set_save_dir(s.save_dir);
  out->set_last(s.last);
  out->set_best(s.best);
  *out->mutable_names() = NamesToWire(s.names);
  out->set_stop(s.stop);
  MapToWire(s.logged_metrics, out->mutable_logged_metrics());
  MapToWire(s.hyperparameters, out->mutable_hyperparameters());
}

void ValidatorToWire(const ValidatorState& s, v1::ValidatorState* out) {
  out->set_training(s.training);
  out->set_epoch(s.epoch);
  out->set_batch_index(s.batch_index);
  out->set_num_batches(s.num_batches);
  out->set_seen(s.seen);
  *out->mutable_names() = NamesToWire(s.names);
  out->set_save_dir(s.save_dir);
  for (const Result& r : s.batch_predictions)
    *out->add_batch_predictions() = ToWire(r);
  for (const Result& r : s.batch_labels) *out->add_batch_labels() = ToWire(r);
  MapToWire(s.metrics, out->mutable_metrics());
  for (const ClassMetrics& c : s.per_class) {
    v1::ClassMetrics* m = out->add_per_class();
    m->set_cls(c.cls);
    m->set_name(c.name);
    m->set_images(c.images);
    m->set_instances(c.instances);
    m->set_precision(c.precision);
    m->set_recall(c.recall);
    m->set_map50(c.map50);
    m->set_map50_95(c.map50_95);
  }
  // Row-major: row i (predicted class i), column j (true class j).
  for (const std::vector<int64_t>& row : s.confusion_matrix) {
    for (int64_t count : row) out->add_confusion_matrix(count);
  }
  out->set_fitness(s.fitness);
  SpeedToWire(s.speed, out->mutable_speed());
}

void PredictorToWire(
    const PredictorState& s,
    const std::function<std::string(const FrameView&)>& encode_jpeg,
    v1::PredictorState* out) {
  out->set_source_type(s.source_type);
  out->set_save_dir(s.save_dir);
  out->set_batch_index(s.batch_index);
  out->set_seen(s.seen);
  for (const std::string& p : s.paths) out->add_paths(p);
  for (const std::string& line : s.strings) out->add_strings(line);
  for (int64_t f : s.frame_indices) out->add_frame_indices(f);
  for (const Result& r : s.results) *out->add_results() = ToWire(r);
  if (encode_jpeg) {
    for (size_t i = 0; i < s.frames.size(); ++i) {
      v1::Image* image = out->add_images();
      image->set_name(i < s.paths.size() ? s.paths[i]
                                         : absl::StrCat("frame", i));
      image->set_data(encode_jpeg(s.frames[i]));
    }
  }
}

void ExporterToWire(const ExporterState& s, v1::ExporterState* out) {
  out->set_file(s.file);
  out->set_format(s.format);
  out->set_imgsz(s.imgsz);
  MapToWire(s.metadata, out->mutable_metadata());
  out->set_output(s.output);
}

bool IsTrainerEvent(const EventContext& ctx) {
  return StageOf(ctx.event) == Stage::kTrainer && ctx.trainer != nullptr;
}

absl::Status ValidateResult(const v1::Result& r, size_t index,
                            const Result* current) {
  const std::string where =
      absl::StrCat("replace_results.results[", index, "]");
  YH_RETURN_IF_ERROR(
      CheckLength(absl::StrCat(where, ".path"), r.path(), kMaxArgValueBytes));
  YH_RETURN_IF_ERROR(CheckCount(absl::StrCat(where, ".boxes"),
                                static_cast<size_t>(r.boxes_size()),
                                kMaxBoxes));
  YH_RETURN_IF_ERROR(CheckCount(absl::StrCat(where, ".names"),
                                static_cast<size_t>(r.names_size()),
                                kMaxMapEntries));
  for (const auto& [id, name] : r.names()) {
    YH_RETURN_IF_ERROR(CheckLength(absl::StrCat(where, ".names[", id, "]"),
                                   name, kMaxNameBytes));
  }
  if (r.orig_height() < 0 || r.orig_width() < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": negative image size ", r.orig_width(), "x", r.orig_height()));
  }
  // Class ids are checked against the replacement's names, or the state's when
  // the replacement carries none (they are filled in from the state).
  size_t num_names = r.names_size() > 0   ? NamesFromWire(r.names()).size()
                     : current != nullptr ? current->names.size()
                                          : 0;
  for (int b = 0; b < r.boxes_size(); ++b) {
    const v1::Box& box = r.boxes(b);
    const std::string field = absl::StrCat(where, ".boxes[", b, "]");
    const std::pair<const char*, float> values[] = {
        {"x1", box.x1()}, {"y1", box.y1()},     {"x2", box.x2()},
        {"y2", box.y2()}, {"conf", box.conf()},
    };
    for (const auto& [name, v] : values) {
      if (!std::isfinite(v)) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ".", name, ": ", v, " is not a finite number"));
      }
    }
    if (box.x1() > box.x2() || box.y1() > box.y2()) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": corners out of order (x1 ", box.x1(), ", y1 ",
                       box.y1(), ", x2 ", box.x2(), ", y2 ", box.y2(),
                       "); need x1 <= x2 and y1 <= y2"));
    }
    if (box.conf() < 0 || box.conf() > 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": conf ", box.conf(), " outside [0, 1]"));
    }
    if (box.cls() < 0 || static_cast<size_t>(box.cls()) >= num_names) {
      return absl::InvalidArgumentError(absl::StrCat(field, ": cls ", box.cls(),
                                                     " is not a class id (",
                                                     num_names, " names)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

v1::Mode ModeToWire(Mode mode) {
  switch (mode) {
    case Mode::kTrain:
      return v1::MODE_TRAIN;
    case Mode::kVal:
      return v1::MODE_VAL;
    case Mode::kPredict:
      return v1::MODE_PREDICT;
    case Mode::kExport:
      return v1::MODE_EXPORT;
  }
  return v1::MODE_UNSPECIFIED;
}

absl::StatusOr<Mode> ModeFromWire(v1::Mode mode) {
  switch (mode) {
    case v1::MODE_TRAIN:
      return Mode::kTrain;
    case v1::MODE_VAL:
      return Mode::kVal;
    case v1::MODE_PREDICT:
      return Mode::kPredict;
    case v1::MODE_EXPORT:
      return Mode::kExport;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("mode: expected MODE_TRAIN, MODE_VAL, MODE_PREDICT or ",
                       "MODE_EXPORT, got ", static_cast<int>(mode)));
  }
}

google::protobuf::Map<int32_t, std::string> NamesToWire(
    const std::vector<std::string>& names) {
  google::protobuf::Map<int32_t, std::string> out;
  for (size_t i = 0; i < names.size(); ++i)
    out[static_cast<int32_t>(i)] = names[i];
  return out;
}

std::vector<std::string> NamesFromWire(
    const google::protobuf::Map<int32_t, std::string>& names) {
  int32_t max_id = -1;
  for (const auto& [id, name] : names) max_id = std::max(max_id, id);
  std::vector<std::string> out(static_cast<size_t>(max_id + 1));
  for (const auto& [id, name] : names) {
    if (id >= 0) out[static_cast<size_t>(id)] = name;
  }
  return out;
}

google::protobuf::Timestamp ToTimestamp(absl::Time time) {
  google::protobuf::Timestamp out;
  const int64_t seconds = absl::ToUnixSeconds(time);
  out.set_seconds(seconds);
  out.set_nanos(static_cast<int32_t>((time - absl::FromUnixSeconds(seconds)) /
                                     absl::Nanoseconds(1)));
  return out;
}

absl::Time FromTimestamp(const google::protobuf::Timestamp& timestamp) {
  return absl::FromUnixSeconds(timestamp.seconds()) +
         absl::Nanoseconds(timestamp.nanos());
}

google::protobuf::Duration ToDurationProto(absl::Duration duration) {
  google::protobuf::Duration out;
  const int64_t seconds =
      absl::IDivDuration(duration, absl::Seconds(1), &duration);
  out.set_seconds(seconds);
  out.set_nanos(static_cast<int32_t>(duration / absl::Nanoseconds(1)));
  return out;
}

absl::Duration FromDurationProto(const google::protobuf::Duration& duration) {
  return absl::Seconds(duration.seconds()) +
         absl::Nanoseconds(duration.nanos());
}

TrainerState TrainerFromWire(const v1::TrainerState& s) {
  TrainerState out;
  out.epoch = s.epoch();
  out.epochs = s.epochs();
  out.start_epoch = s.start_epoch();
  out.batch_index = s.batch_index();
  out.num_batches = s.num_batches();
  out.iteration = s.iteration();
  out.batch_size = s.batch_size();
  out.imgsz = s.imgsz();
  out.loss = s.loss();
  out.loss_items.assign(s.loss_items().begin(), s.loss_items().end());
  out.tloss.assign(s.tloss().begin(), s.tloss().end());
  out.loss_names.assign(s.loss_names().begin(), s.loss_names().end());
  out.metrics.insert(s.metrics().begin(), s.metrics().end());
  out.fitness = s.fitness();
  out.best_fitness = s.best_fitness();
  out.lr.insert(s.lr().begin(), s.lr().end());
  out.epoch_time = s.epoch_time();
  out.elapsed = s.elapsed();
  out.save_dir = s.save_dir();
  out.last = s.last();
  out.best = s.best();
  out.names = NamesFromWire(s.names());
  out.stop = s.stop();
  out.logged_metrics.insert(s.logged_metrics().begin(),
                            s.logged_metrics().end());
  out.hyperparameters.insert(s.hyperparameters().begin(),
                             s.hyperparameters().end());
  return out;
}

ValidatorState ValidatorFromWire(const v1::ValidatorState& s) {
  ValidatorState out;
  out.training = s.training();
  out.epoch = s.epoch();
  out.batch_index = s.batch_index();
  out.num_batches = s.num_batches();
  out.seen = s.seen();
  out.names = NamesFromWire(s.names());
  out.save_dir = s.save_dir();
  for (const v1::Result& r : s.batch_predictions())
    out.batch_predictions.push_back(FromWire(r));
  for (const v1::Result& r : s.batch_labels())
    out.batch_labels.push_back(FromWire(r));
  out.metrics.insert(s.metrics().begin(), s.metrics().end());
  for (const v1::ClassMetrics& m : s.per_class()) {
    ClassMetrics c;
    c.cls = m.cls();
    c.name = m.name();
    c.images = m.images();
    c.instances = m.instances();
    c.precision = m.precision();
    c.recall = m.recall();
    c.map50 = m.map50();
    c.map50_95 = m.map50_95();
    out.per_class.push_back(std::move(c));
  }
  const int64_t cells = s.confusion_matrix_size();
  int64_t n =
      static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(cells))));
  if (n * n == cells) {
    out.confusion_matrix.assign(static_cast<size_t>(n),
                                std::vector<int64_t>(static_cast<size_t>(n)));
    for (int64_t i = 0; i < cells; ++i) {
      out.confusion_matrix[static_cast<size_t>(i / n)]
                          [static_cast<size_t>(i % n)] =
          s.confusion_matrix(static_cast<int>(i));
    }
  }
  out.fitness = s.fitness();
  out.speed = SpeedFromWire(s.speed());
  return out;
}

v1::Result ToWire(const Result& result) {
  v1::Result out;
  out.set_path(result.path);
  out.set_orig_height(result.orig_height);
  out.set_orig_width(result.orig_width);
  for (const Box& b : result.boxes) {
    v1::Box* box = out.add_boxes();
    box->set_x1(b.x1);
    box->set_y1(b.y1);
    box->set_x2(b.x2);
    box->set_y2(b.y2);
    box->set_conf(b.conf);
    box->set_cls(b.cls);
    if (b.track_id) box->set_track_id(*b.track_id);
  }
  *out.mutable_names() = NamesToWire(result.names);
  SpeedToWire(result.speed, out.mutable_speed());
  return out;
}

Result FromWire(const v1::Result& result) {
  Result out;
  out.path = result.path();
  out.orig_height = result.orig_height();
  out.orig_width = result.orig_width();
  out.boxes.reserve(static_cast<size_t>(result.boxes_size()));
  for (const v1::Box& b : result.boxes()) {
    Box box;
    box.x1 = b.x1();
    box.y1 = b.y1();
    box.x2 = b.x2();
    box.y2 = b.y2();
    box.conf = b.conf();
    box.cls = b.cls();
    if (b.has_track_id()) box.track_id = b.track_id();
    out.boxes.push_back(box);
  }
  out.names = NamesFromWire(result.names());
  out.speed = SpeedFromWire(result.speed());
  return out;
}

v1::Event ToWire(
    const std::string& job_id, int64_t seq, absl::Time time,
    const EventContext& ctx, const std::map<std::string, std::string>& args,
    const std::function<std::string(const FrameView&)>& encode_jpeg) {
  v1::Event event;
  event.set_job_id(job_id);
  event.set_seq(seq);
  const absl::string_view name = EventName(ctx.event);
  event.set_name(std::string(name.data(), name.size()));
  *event.mutable_time() = ToTimestamp(time);
  MapToWire(args, event.mutable_args());
  if (ctx.trainer != nullptr) {
    TrainerToWire(*ctx.trainer, event.mutable_trainer());
  } else if (ctx.validator != nullptr) {
    ValidatorToWire(*ctx.validator, event.mutable_validator());
  } else if (ctx.predictor != nullptr) {
    PredictorToWire(*ctx.predictor, encode_jpeg, event.mutable_predictor());
  } else if (ctx.exporter != nullptr) {
    ExporterToWire(*ctx.exporter, event.mutable_exporter());
  }
  return event;
}

absl::Status ValidateMutation(const v1::Mutation& mutation,
                              const EventContext& ctx) {
  const absl::string_view event_name = EventName(ctx.event);
  switch (mutation.kind_case()) {
    case v1::Mutation::kReplaceResults: {
      if ((ctx.event != Event::kOnPredictPostprocessEnd &&
           ctx.event != Event::kOnPredictBatchEnd) ||
          ctx.predictor == nullptr) {
        return absl::FailedPreconditionError(absl::StrCat(
            "replace_results is not allowed at ", event_name,
            " (only on_predict_postprocess_end and on_predict_batch_end)"));
      }
      const PredictorState& state = *ctx.predictor;
      const size_t batch = !state.paths.empty()    ? state.paths.size()
                           : !state.frames.empty() ? state.frames.size()
                                                   : state.results.size();
      const auto& results = mutation.replace_results().results();
      if (static_cast<size_t>(results.size()) != batch) {
        return absl::InvalidArgumentError(absl::StrCat(
            "replace_results.results: ", results.size(),
            " results for a batch of ", batch, " images (need one per image)"));
      }
      for (int i = 0; i < results.size(); ++i) {
        const size_t index = static_cast<size_t>(i);
        const Result* current =
            index < state.results.size() ? &state.results[index] : nullptr;
        YH_RETURN_IF_ERROR(ValidateResult(results[i], index, current));
      }
      return absl::OkStatus();
    }
    case v1::Mutation::kLogMetrics: {
      if (!IsTrainerEvent(ctx)) {
        return absl::FailedPreconditionError(
            absl::StrCat("log_metrics is not allowed at ", event_name,
                         " (trainer events only)"));
      }
      YH_RETURN_IF_ERROR(
          CheckCount("log_metrics.metrics",
                     static_cast<size_t>(mutation.log_metrics().metrics_size()),
                     kMaxMapEntries));
      for (const auto& [name, value] : mutation.log_metrics().metrics()) {
        if (name.empty()) {
          return absl::InvalidArgumentError(
              "log_metrics.metrics: empty metric name");
        }
        YH_RETURN_IF_ERROR(
            CheckLength("log_metrics.metrics key", name, kMaxNameBytes));
        if (!std::isfinite(value)) {
          return absl::InvalidArgumentError(
              absl::StrCat("log_metrics.metrics[", Quoted(name),
                           "]: non-finite value ", value));
        }
      }
      return absl::OkStatus();
    }
    case v1::Mutation::kStopTraining:
      if (!IsTrainerEvent(ctx)) {
        return absl::FailedPreconditionError(
            absl::StrCat("stop_training is not allowed at ", event_name,
                         " (trainer events only)"));
      }
      return CheckLength("stop_training.reason",
                         mutation.stop_training().reason(), kMaxTextBytes);
    case v1::Mutation::kSetHyperparameters: {
      if (!IsTrainerEvent(ctx)) {
        return absl::FailedPreconditionError(
            absl::StrCat("set_hyperparameters is not allowed at ", event_name,
                         " (trainer events only)"));
      }
      YH_RETURN_IF_ERROR(CheckCount(
          "set_hyperparameters.values",
          static_cast<size_t>(mutation.set_hyperparameters().values_size()),
          kMaxMapEntries));
      Config scratch;
      for (const auto& [name, value] :
           mutation.set_hyperparameters().values()) {
        YH_RETURN_IF_ERROR(
            CheckLength("set_hyperparameters.values key", name, kMaxNameBytes));
        absl::Status status = SetHyperparameter(scratch, name, value);
        if (!status.ok()) {
          return absl::InvalidArgumentError(
              absl::StrCat("set_hyperparameters.values[", Quoted(name),
                           "]: ", status.message()));
        }
      }
      return absl::OkStatus();
    }
    case v1::Mutation::kFailJob:
      return CheckLength("fail_job.reason", mutation.fail_job().reason(),
                         kMaxTextBytes);
    case v1::Mutation::KIND_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError("mutation has no kind set");
}

void ApplyMutation(const v1::Mutation& mutation, EventContext& ctx) {
  switch (mutation.kind_case()) {
    case v1::Mutation::kReplaceResults: {
      if (ctx.predictor == nullptr) return;
      std::vector<Result>& results = ctx.predictor->results;
      std::vector<Result> replaced;
      const auto& incoming = mutation.replace_results().results();
      replaced.reserve(static_cast<size_t>(incoming.size()));
      for (int i = 0; i < incoming.size(); ++i) {
        Result r = FromWire(incoming[i]);
        const size_t index = static_cast<size_t>(i);
        if (r.names.empty() && index < results.size())
          r.names = results[index].names;
        replaced.push_back(std::move(r));
      }
      results = std::move(replaced);
      return;
    }
    case v1::Mutation::kLogMetrics:
      if (ctx.trainer == nullptr) return;
      for (const auto& [name, value] : mutation.log_metrics().metrics()) {
        ctx.trainer->logged_metrics[name] = value;
      }
      return;
    case v1::Mutation::kStopTraining:
      if (ctx.trainer != nullptr) ctx.trainer->stop = true;
      return;
    case v1::Mutation::kSetHyperparameters:
      if (ctx.trainer == nullptr) return;
      for (const auto& [name, value] :
           mutation.set_hyperparameters().values()) {
        ctx.trainer->hyperparameters[name] = value;
      }
      return;
    case v1::Mutation::kFailJob: {
      const std::string& reason = mutation.fail_job().reason();
      ctx.Fail(reason.empty() ? std::string("failed by a remote callback")
                              : reason);
      return;
    }
    case v1::Mutation::KIND_NOT_SET:
      return;
  }
}

}  // namespace yolohook::events
