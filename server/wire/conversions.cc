// Conversions between the engine's state structs and the yolohook.v1 wire
// messages, and the rules for interceptors' mutations.
#include "server/wire/conversions.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/callbacks/events.h"
#include "server/common/limits.h"
#include "server/common/status_macros.h"
#include "server/engine/config.h"

namespace yolohook::wire {
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

v1::ArgumentInfo ToWire(const ArgInfo& arg) {
  v1::ArgumentInfo out;
  out.set_name(arg.name);
  out.set_help(arg.help);
  out.set_default_value(arg.default_value);
  out.set_type(arg.type);
  out.set_min(arg.min);
  out.set_max(arg.max);
  out.set_hyperparameter(arg.hyperparameter);
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

}  // namespace yolohook::wire
