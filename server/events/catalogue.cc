#include "server/events/catalogue.h"

#include "server/callbacks/events.h"
#include "server/events/mutations.h"

namespace yolohook::events {
namespace {

const char* StageName(Stage stage) {
  switch (stage) {
    case Stage::kTrainer:
      return "trainer";
    case Stage::kValidator:
      return "validator";
    case Stage::kPredictor:
      return "predictor";
    case Stage::kExporter:
      return "exporter";
  }
  return "";
}

// Validators also run inside training, after each epoch.
std::vector<v1::Mode> ModesOf(Stage stage) {
  switch (stage) {
    case Stage::kTrainer:
      return {v1::MODE_TRAIN};
    case Stage::kValidator:
      return {v1::MODE_TRAIN, v1::MODE_VAL};
    case Stage::kPredictor:
      return {v1::MODE_PREDICT};
    case Stage::kExporter:
      return {v1::MODE_EXPORT};
  }
  return {};
}

}  // namespace

std::vector<v1::EventInfo> EventCatalogue() {
  std::vector<v1::EventInfo> catalogue;
  for (Event event : AllEvents()) {
    v1::EventInfo& info = catalogue.emplace_back();
    info.set_name(std::string(EventName(event)));
    info.set_stage(StageName(StageOf(event)));
    for (v1::Mode mode : ModesOf(StageOf(event))) info.add_modes(mode);
    for (v1::Mutation::KindCase kind : AllowedMutations(event))
      info.add_mutations(MutationName(kind));
  }
  return catalogue;
}

}  // namespace yolohook::events
