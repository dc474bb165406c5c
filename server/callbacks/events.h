// The 25 Ultralytics callback events, their names and the stage that fires
// them.
#ifndef YOLOHOOK_SERVER_CALLBACKS_EVENTS_H_
#define YOLOHOOK_SERVER_CALLBACKS_EVENTS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace yolohook {

// In the order of Ultralytics' default callback table.
enum class Event {
  // Trainer.
  kOnPretrainRoutineStart,
  kOnPretrainRoutineEnd,
  kOnTrainStart,
  kOnTrainEpochStart,
  kOnTrainBatchStart,
  kOptimizerStep,
  kOnBeforeZeroGrad,
  kOnTrainBatchEnd,
  kOnTrainEpochEnd,
  kOnFitEpochEnd,
  kOnModelSave,
  kOnTrainEnd,
  kOnParamsUpdate,
  kTeardown,
  // Validator.
  kOnValStart,
  kOnValBatchStart,
  kOnValBatchEnd,
  kOnValEnd,
  // Predictor.
  kOnPredictStart,
  kOnPredictBatchStart,
  kOnPredictPostprocessEnd,
  kOnPredictBatchEnd,
  kOnPredictEnd,
  // Exporter.
  kOnExportStart,
  kOnExportEnd,
};

inline constexpr int kNumEvents = 25;

// Which object fires an event, and so which state it carries.
enum class Stage { kTrainer, kValidator, kPredictor, kExporter };

// The Ultralytics name, e.g. "on_train_epoch_end".
absl::string_view EventName(Event event);

// Parses an Ultralytics event name. Errors: INVALID_ARGUMENT listing the valid
// names.
absl::StatusOr<Event> EventFromName(absl::string_view name);

Stage StageOf(Event event);

// All events in enum order.
const std::vector<Event>& AllEvents();

// "on_pretrain_routine_start, on_pretrain_routine_end, ..." for error messages.
std::string AllEventNames();

}  // namespace yolohook

#endif  // YOLOHOOK_SERVER_CALLBACKS_EVENTS_H_
