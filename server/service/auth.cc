#include "server/service/auth.h"

#include <arpa/inet.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/limits.h"

namespace yolohook::service {

absl::StatusOr<auth::Principal> Authorizer::Check(
    const grpc::ServerContextBase& context, auth::Role need,
    absl::string_view method) const {
  if (tokens_ == nullptr)
    return auth::Principal{context.peer(), auth::Role::kAdmin};
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  std::optional<absl::string_view> token;
  if (it != metadata.end()) {
    token = auth::ParseBearer(
        absl::string_view(it->second.data(), it->second.size()));
  }
  std::optional<auth::Principal> who;
  if (token.has_value()) {
    who = tokens_->Find(*token);
    if (!who.has_value()) return absl::UnauthenticatedError("unknown token");
  } else if (std::vector<std::string> identities =
                 CertificateIdentities(context);
             !identities.empty()) {
    who = tokens_->FindCertificate(identities);
    if (!who.has_value()) {
      std::vector<std::string> shown;
      for (const std::string& identity : identities)
        shown.push_back(Quoted(identity));
      return absl::UnauthenticatedError(absl::StrCat(
          "the client certificate (", absl::StrJoin(shown, ", "),
          ") is not in the token file: add a line cert:IDENTITY,name,role, "
          "or send a bearer token"));
    }
  } else {
    return absl::UnauthenticatedError(
        "missing bearer token: send the metadata \"authorization: Bearer "
        "<token>\" (or, with mutual TLS, a client certificate the token file "
        "names)");
  }
  if (!auth::Allows(who->role, need))
    return PermissionDenied(*who, need, method);
  return *who;
}

std::vector<std::string> CertificateIdentities(
    const grpc::ServerContextBase& context) {
  std::vector<std::string> identities;
  std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth == nullptr || !auth->IsPeerAuthenticated()) return identities;
  for (const char* property :
       {"x509_common_name", "x509_subject_alternative_name"}) {
    for (const grpc::string_ref& value : auth->FindPropertyValues(property)) {
      std::string identity(value.data(), value.size());
      if (!identity.empty() && std::find(identities.begin(), identities.end(),
                                         identity) == identities.end()) {
        identities.push_back(std::move(identity));
      }
    }
  }
  return identities;
}

absl::Status PermissionDenied(const auth::Principal& who, auth::Role need,
                              absl::string_view method) {
  return absl::PermissionDeniedError(absl::StrCat(
      method, " needs role ", auth::RoleName(need), " or higher; client \"",
      who.name, "\" has role ", auth::RoleName(who.role)));
}

absl::StatusOr<std::string> ReadPem(absl::string_view flag,
                                    const std::string& path) {
  auto error = [&](absl::string_view what) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, "=", path, ": ", what));
  };
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return error("no such file");
  if (std::filesystem::is_directory(path, ec)) return error("is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) return error("cannot be read");
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad()) return error("cannot be read");
  std::string pem = text.str();
  if (!absl::StrContains(pem, "-----BEGIN ")) {
    return error("not a PEM file (no -----BEGIN line)");
  }
  return pem;
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentialsFor(
    const TlsFiles& files) {
  if (files.cert.empty() != files.key.empty()) {
    return absl::InvalidArgumentError(
        "--tls_cert and --tls_key go together: give both (TLS) or neither "
        "(plaintext)");
  }
  if (files.cert.empty()) {
    if (!files.client_ca.empty()) {
      return absl::InvalidArgumentError(
          "--tls_client_ca needs --tls_cert and --tls_key (mutual TLS is TLS "
          "with client certificates)");
    }
    return grpc::InsecureServerCredentials();
  }
  grpc::SslServerCredentialsOptions ssl;
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  auto cert = ReadPem("tls_cert", files.cert);
  if (!cert.ok()) return cert.status();
  if (!absl::StrContains(*cert, "-----BEGIN CERTIFICATE-----")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tls_cert=", files.cert, ": holds no CERTIFICATE block"));
  }
  auto key = ReadPem("tls_key", files.key);
  if (!key.ok()) return key.status();
  if (!absl::StrContains(*key, "PRIVATE KEY-----")) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls_key=", files.key, ": holds no PRIVATE KEY block"));
  }
  pair.cert_chain = *std::move(cert);
  pair.private_key = *std::move(key);
  ssl.pem_key_cert_pairs.push_back(std::move(pair));
  if (!files.client_ca.empty()) {
    auto ca = ReadPem("tls_client_ca", files.client_ca);
    if (!ca.ok()) return ca.status();
    if (!absl::StrContains(*ca, "-----BEGIN CERTIFICATE-----")) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--tls_client_ca=", files.client_ca, ": holds no CERTIFICATE block"));
    }
    ssl.pem_root_certs = *std::move(ca);
    ssl.client_certificate_request =
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(ssl);
}

bool IsLoopback(absl::string_view listen) {
  absl::string_view host = listen;
  if (absl::StartsWith(host, "[")) {
    size_t close = host.find(']');
    if (close == absl::string_view::npos) return false;
    host = host.substr(1, close - 1);
  } else {
    size_t colon = host.rfind(':');
    if (colon != absl::string_view::npos &&
        host.find(':') == colon) {  // host:port, not a bare IPv6 address
      host = host.substr(0, colon);
    }
  }
  if (absl::EqualsIgnoreCase(host, "localhost")) return true;
  std::string text(host);
  in_addr v4;
  if (inet_pton(AF_INET, text.c_str(), &v4) == 1) {
    return (ntohl(v4.s_addr) >> 24) == 127;
  }
  in6_addr v6;
  if (inet_pton(AF_INET6, text.c_str(), &v6) == 1) {
    return IN6_IS_ADDR_LOOPBACK(&v6);
  }
  return false;
}

}  // namespace yolohook::service
