#include "server/callbacks/events.h"

#include <array>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/limits.h"

namespace yolohook {
namespace {

constexpr std::array<absl::string_view, kNumEvents> kNames = {
    "on_pretrain_routine_start",
    "on_pretrain_routine_end",
    "on_train_start",
    "on_train_epoch_start",
    "on_train_batch_start",
    "optimizer_step",
    "on_before_zero_grad",
    "on_train_batch_end",
    "on_train_epoch_end",
    "on_fit_epoch_end",
    "on_model_save",
    "on_train_end",
    "on_params_update",
    "teardown",
    "on_val_start",
    "on_val_batch_start",
    "on_val_batch_end",
    "on_val_end",
    "on_predict_start",
    "on_predict_batch_start",
    "on_predict_postprocess_end",
    "on_predict_batch_end",
    "on_predict_end",
    "on_export_start",
    "on_export_end",
};

}  // namespace

absl::string_view EventName(Event event) {
  return kNames[static_cast<int>(event)];
}

absl::StatusOr<Event> EventFromName(absl::string_view name) {
  for (int i = 0; i < kNumEvents; ++i) {
    if (kNames[i] == name) return static_cast<Event>(i);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown callback event ", Quoted(name),
                   "; valid events: ", AllEventNames()));
}

Stage StageOf(Event event) {
  if (event <= Event::kTeardown) return Stage::kTrainer;
  if (event <= Event::kOnValEnd) return Stage::kValidator;
  if (event <= Event::kOnPredictEnd) return Stage::kPredictor;
  return Stage::kExporter;
}

const std::vector<Event>& AllEvents() {
  static const auto* events = [] {
    auto* v = new std::vector<Event>;
    for (int i = 0; i < kNumEvents; ++i) v->push_back(static_cast<Event>(i));
    return v;
  }();
  return *events;
}

std::string AllEventNames() { return absl::StrJoin(kNames, ", "); }

}  // namespace yolohook
