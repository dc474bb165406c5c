// The wire format's one home: every conversion between the engine's C++
// types and the yolohook.v1 messages (events, results, names, modes, time,
// and the way back for trainer and validator state, which clients use to
// rebuild state from events). Shared by the event layer, the jobs layer, the
// services, the dashboard and the C++ client; depends on no server part.
#ifndef YOLOHOOK_SERVER_WIRE_CONVERSIONS_H_
#define YOLOHOOK_SERVER_WIRE_CONVERSIONS_H_

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/map.h"
#include "google/protobuf/timestamp.pb.h"
#include "server/callbacks/state.h"
#include "server/engine/config.h"
#include "yolohook/v1/info.pb.h"
#include "yolohook/v1/jobs.pb.h"
#include "yolohook/v1/types.pb.h"

namespace yolohook::wire {

// The event as the wire carries it (no subscription fields set). Frames are
// attached only when `encode_jpeg` is given.
v1::Event ToWire(
    const std::string& job_id, int64_t seq, absl::Time time,
    const EventContext& ctx, const std::map<std::string, std::string>& args,
    const std::function<std::string(const FrameView&)>& encode_jpeg);
v1::Result ToWire(const Result& result);
Result FromWire(const v1::Result& result);
// A job argument as ServerInfo lists it.
v1::ArgumentInfo ToWire(const ArgInfo& arg);

// Class names indexed by id <-> the wire's id -> name map. Ids missing from
// the map become empty names; negative ids are dropped.
google::protobuf::Map<int32_t, std::string> NamesToWire(
    const std::vector<std::string>& names);
std::vector<std::string> NamesFromWire(
    const google::protobuf::Map<int32_t, std::string>& names);

// Job modes: the engine's <-> the wire's. ModeFromWire: INVALID_ARGUMENT for
// MODE_UNSPECIFIED or an unknown value.
v1::Mode ModeToWire(Mode mode);
absl::StatusOr<Mode> ModeFromWire(v1::Mode mode);

google::protobuf::Timestamp ToTimestamp(absl::Time time);
absl::Time FromTimestamp(const google::protobuf::Timestamp& timestamp);
google::protobuf::Duration ToDurationProto(absl::Duration duration);
absl::Duration FromDurationProto(const google::protobuf::Duration& duration);

// The state carried by an event, back as the engine's structs. The confusion
// matrix is unflattened as a square matrix (its size must be a square number;
// otherwise it is left empty).
TrainerState TrainerFromWire(const v1::TrainerState& state);
ValidatorState ValidatorFromWire(const v1::ValidatorState& state);

}  // namespace yolohook::wire

#endif  // YOLOHOOK_SERVER_WIRE_CONVERSIONS_H_
