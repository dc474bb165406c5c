// The engine's view of a wire event, rebuilt on the client side: a callback
// written for engine::Yolo::AddCallback runs on it unchanged, and what it
// changed becomes the Reply's mutations.
#ifndef YOLOHOOK_CLIENT_CPP_REMOTE_STATE_H_
#define YOLOHOOK_CLIENT_CPP_REMOTE_STATE_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "server/callbacks/state.h"
#include "yolohook/v1/types.pb.h"

namespace yolohook {

// An event's state as the engine's structs (exposed for tools and tests):
// ctx points at the member state matching the event's stage, and decoded
// predictor frames point into frame_pixels.
struct RemoteEventState {
  RemoteEventState() = default;
  // ctx points inside.
  RemoteEventState(const RemoteEventState&) = delete;
  RemoteEventState& operator=(const RemoteEventState&) = delete;

  EventContext ctx;
  TrainerState trainer;
  ValidatorState validator;
  PredictorState predictor;
  ExporterState exporter;
  // BGR bytes behind predictor.frames.
  std::vector<std::string> frame_pixels;
};

// Fills `state` from `event`, decoding predictor frames when `decode_images`.
// INVALID_ARGUMENT for an unknown event name or a state that does not match
// the event's stage.
absl::Status StateFromEvent(const v1::Event& event, RemoteEventState& state,
                            bool decode_images = true);

// The mutations that turn `before` into what the callback left in `after`:
// replaced results, a stop, changed hyperparameters, new or changed logged
// metrics, a failure. `before` is a fresh copy of the event's state.
std::vector<v1::Mutation> DiffMutations(const RemoteEventState& before,
                                        const RemoteEventState& after);

}  // namespace yolohook

#endif  // YOLOHOOK_CLIENT_CPP_REMOTE_STATE_H_
