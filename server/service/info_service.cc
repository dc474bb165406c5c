#include "server/service/info_service.h"

#include "absl/strings/string_view.h"
#include "server/common/limits.h"
#include "server/common/status_macros.h"
#include "server/engine/config.h"
#include "server/engine/version.h"
#include "server/events/catalogue.h"
#include "server/service/unary_call.h"
#include "server/wire/conversions.h"

namespace yolohook::service {

v1::ServerInfo MakeServerInfo(
    const std::map<std::string, int64_t>& server_limits, bool auth) {
  v1::ServerInfo info;
  info.set_version(kVersion);
  info.set_api("v1");
  for (v1::EventInfo& event : events::EventCatalogue())
    *info.add_events() = std::move(event);
  for (const ArgInfo& arg : ArgInfos())
    *info.add_arguments() = wire::ToWire(arg);
  auto& limits = *info.mutable_limits();
  const std::pair<const char*, size_t> protocol[] = {
      {"max_id_bytes", kMaxIdBytes},
      {"max_labels", kMaxLabels},
      {"max_label_key_bytes", kMaxLabelKeyBytes},
      {"max_label_value_bytes", kMaxLabelValueBytes},
      {"max_args", kMaxArgs},
      {"max_arg_key_bytes", kMaxArgKeyBytes},
      {"max_arg_value_bytes", kMaxArgValueBytes},
      {"max_event_names", kMaxEventNames},
      {"max_job_ids", kMaxJobIds},
      {"max_name_bytes", kMaxNameBytes},
      {"max_text_bytes", kMaxTextBytes},
      {"max_map_entries", kMaxMapEntries},
      {"max_boxes", kMaxBoxes},
  };
  for (const auto& [name, value] : protocol)
    limits[name] = static_cast<int64_t>(value);
  for (const auto& [name, value] : server_limits) limits[name] = value;
  info.set_auth(auth);
  return info;
}

grpc::ServerUnaryReactor* InfoServiceImpl::GetServerInfo(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* in,
    grpc::ByteBuffer* out) {
  constexpr absl::string_view kMethod = "yolohook.v1.InfoService/GetServerInfo";
  auto* call = UnaryCall<v1::GetServerInfoRequest, v1::ServerInfo>::Start(
      kMethod, in, out);
  if (!call->parsed()) return call;
  call->Finish([&]() -> absl::Status {
    YH_RETURN_IF_ERROR(
        authorizer_->Allow(*context, auth::Role::kViewer, kMethod));
    *call->response() = info_;
    return absl::OkStatus();
  }());
  return call;
}

}  // namespace yolohook::service
