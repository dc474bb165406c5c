// Frames as events carry them to clients: JPEG bytes of the images a
// predictor batch holds.
#ifndef YOLOHOOK_SERVER_ENGINE_DATA_FRAMES_H_
#define YOLOHOOK_SERVER_ENGINE_DATA_FRAMES_H_

#include <string>

#include "server/callbacks/state.h"

namespace yolohook::data {

// `frame` as JPEG (quality 90); "" for an empty frame or when encoding fails.
// For subscriptions that ask for images (EventBus::Options::encode_jpeg).
std::string EncodeJpeg(const FrameView& frame);

}  // namespace yolohook::data

#endif  // YOLOHOOK_SERVER_ENGINE_DATA_FRAMES_H_
