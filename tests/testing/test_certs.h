// Certificates for TLS tests, made at run time with the openssl command: a
// CA, a server certificate for 127.0.0.1 and localhost, and a client
// certificate, all signed by the CA, plus a second CA that signed nothing
// the server trusts.
#ifndef YOLOHOOK_TESTS_TESTING_TEST_CERTS_H_
#define YOLOHOOK_TESTS_TESTING_TEST_CERTS_H_

#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace yolohook::testing {

struct TestCerts {
  // CA certificate (PEM)
  std::string ca;
  // signed by ca; SAN 127.0.0.1, localhost
  std::string server_cert;
  std::string server_key;
  // signed by ca; CN test-client
  std::string client_cert;
  std::string client_key;
  // signed by another CA
  std::string other_client_cert;
  std::string other_client_key;
};

// Writes the files into `dir` (which must exist). INTERNAL naming the command
// when openssl fails.
inline absl::StatusOr<TestCerts> MakeTestCerts(const std::string& dir) {
  auto run = [&](const std::string& command) -> absl::Status {
    const std::string line =
        absl::StrCat("cd '", dir, "' && ", command, " >openssl.log 2>&1");
    if (std::system(line.c_str()) != 0) {
      return absl::InternalError(absl::StrCat("openssl failed (see ", dir,
                                              "/openssl.log): ", command));
    }
    return absl::OkStatus();
  };
  const std::string key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1";
  auto make_ca = [&](const std::string& name) {
    return run(absl::StrCat("openssl req -x509 ", key,
                            " -nodes -days 2 -keyout ", name, ".key -out ",
                            name, ".pem -subj /CN=", name,
                            " -addext basicConstraints=critical,CA:TRUE"
                            " -addext keyUsage=critical,keyCertSign,cRLSign"));
  };
  auto make_leaf = [&](const std::string& name, const std::string& ca,
                       const std::string& ext) {
    std::ofstream(absl::StrCat(dir, "/", name, ".ext")) << ext << "\n";
    absl::Status s =
        run(absl::StrCat("openssl req ", key, " -nodes -keyout ", name,
                         ".key -out ", name, ".csr -subj /CN=", name));
    if (!s.ok()) return s;
    return run(absl::StrCat("openssl x509 -req -days 2 -in ", name, ".csr -CA ",
                            ca, ".pem -CAkey ", ca,
                            ".key -CAcreateserial -out ", name,
                            ".pem -extfile ", name, ".ext"));
  };
  absl::Status s = make_ca("ca");
  if (s.ok()) s = make_ca("other-ca");
  if (s.ok()) {
    s = make_leaf("server", "ca",
                  "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                  "extendedKeyUsage=serverAuth");
  }
  if (s.ok()) {
    s = make_leaf("test-client", "ca", "extendedKeyUsage=clientAuth");
  }
  if (s.ok()) {
    s = make_leaf("other-client", "other-ca", "extendedKeyUsage=clientAuth");
  }
  if (!s.ok()) return s;
  auto path = [&](const std::string& name) {
    return absl::StrCat(dir, "/", name);
  };
  return TestCerts{path("ca.pem"),          path("server.pem"),
                   path("server.key"),      path("test-client.pem"),
                   path("test-client.key"), path("other-client.pem"),
                   path("other-client.key")};
}

}  // namespace yolohook::testing

#endif  // YOLOHOOK_TESTS_TESTING_TEST_CERTS_H_
