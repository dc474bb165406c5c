#include "client/cpp/connection.h"

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace yolohook::client_internal {
namespace {

// A file's contents, for option `option`. INVALID_ARGUMENT naming both when
// it cannot be read or lacks `must_contain`.
absl::StatusOr<std::string> ReadOptionFile(absl::string_view option,
                                           const std::string& path,
                                           absl::string_view must_contain,
                                           absl::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Client::Options::", option, " ", path, ": cannot be read"));
  }
  std::stringstream text;
  text << in.rdbuf();
  std::string data = text.str();
  if (!absl::StrContains(data, must_contain)) {
    return absl::InvalidArgumentError(
        absl::StrCat("Client::Options::", option, " ", path, ": not ", what));
  }
  return data;
}

// The bearer token and credentials the options ask for.
absl::Status SetUpSecurity(const Client::Options& options, std::string& token,
                           std::shared_ptr<grpc::ChannelCredentials>& creds,
                           grpc::ChannelArguments& args) {
  token = options.token;
  if (token.empty() && !options.token_file.empty()) {
    absl::StatusOr<std::string> text =
        ReadOptionFile("token_file", options.token_file, "", "");
    if (!text.ok()) return text.status();
    for (absl::string_view line : absl::StrSplit(*text, '\n')) {
      line = absl::StripAsciiWhitespace(line);
      if (!line.empty()) {
        token = std::string(line);
        break;
      }
    }
    if (token.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("Client::Options::token_file ", options.token_file,
                       ": holds no token"));
    }
  }
  if (options.credentials != nullptr) {
    creds = options.credentials;
    return absl::OkStatus();
  }
  const bool tls = options.tls || !options.tls_ca_file.empty() ||
                   !options.tls_cert_file.empty() ||
                   !options.tls_key_file.empty() ||
                   !options.tls_server_name.empty();
  if (!tls) {
    creds = grpc::InsecureChannelCredentials();
    return absl::OkStatus();
  }
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "Client::Options::tls_cert_file and tls_key_file go together (mutual "
        "TLS needs both)");
  }
  grpc::SslCredentialsOptions ssl;
  if (!options.tls_ca_file.empty()) {
    absl::StatusOr<std::string> ca =
        ReadOptionFile("tls_ca_file", options.tls_ca_file,
                       "-----BEGIN CERTIFICATE-----", "a PEM certificate");
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *std::move(ca);
  }
  if (!options.tls_cert_file.empty()) {
    absl::StatusOr<std::string> cert =
        ReadOptionFile("tls_cert_file", options.tls_cert_file,
                       "-----BEGIN CERTIFICATE-----", "a PEM certificate");
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key =
        ReadOptionFile("tls_key_file", options.tls_key_file, "PRIVATE KEY-----",
                       "a PEM private key");
    if (!key.ok()) return key.status();
    ssl.pem_cert_chain = *std::move(cert);
    ssl.pem_private_key = *std::move(key);
  }
  if (!options.tls_server_name.empty()) {
    args.SetSslTargetNameOverride(options.tls_server_name);
  }
  creds = grpc::SslCredentials(ssl);
  return absl::OkStatus();
}

}  // namespace

absl::Status FromGrpc(const grpc::Status& status, const std::string& target) {
  if (status.ok()) return absl::OkStatus();
  std::string message = status.error_message();
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE ||
      status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    message = absl::StrCat("yolohookd at ", target, ": ", message);
  }
  if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED &&
      absl::StrContains(message, "message larger than max")) {
    // gRPC's own words name neither limit.
    absl::StrAppend(&message,
                    " (bytes; requests are limited by yolohookd "
                    "--max_message_mb, this client by "
                    "Client::Options::max_message_bytes: send fewer or "
                    "smaller images per request, or raise the limits)");
  }
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      message);
}

ChannelSetup::ChannelSetup(const Client::Options& options)
    : target_(options.target) {
  args_.SetMaxReceiveMessageSize(options.max_message_bytes);
  args_.SetMaxSendMessageSize(options.max_message_bytes);
  // gRPC's own reconnect backoff (up to two minutes by default) would
  // outlast ours: keep them in step.
  const int initial = static_cast<int>(std::max<int64_t>(
      1, absl::ToInt64Milliseconds(options.reconnect_initial_backoff)));
  const int max_backoff = static_cast<int>(std::max<int64_t>(
      initial, absl::ToInt64Milliseconds(options.reconnect_max_backoff)));
  args_.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, initial);
  args_.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, initial);
  args_.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, max_backoff);
  problem_ = SetUpSecurity(options, token_, credentials_, args_);
  if (!problem_.ok()) credentials_ = grpc::InsecureChannelCredentials();
}

std::shared_ptr<grpc::Channel> ChannelSetup::NewChannel(
    bool own_connection) const {
  grpc::ChannelArguments args = args_;
  if (own_connection) args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(target_, credentials_, args);
}

void ChannelSetup::Authorize(grpc::ClientContext& context) const {
  if (!token_.empty())
    context.AddMetadata("authorization", absl::StrCat("Bearer ", token_));
}

}  // namespace yolohook::client_internal
