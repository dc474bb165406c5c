// The Kubernetes manifests and the Dockerfile agree with the server: ports,
// the health probe, the data directory, the flag file (every flag one that
// yolohookd documents), the address clients in the cluster use, and the
// bearer tokens (the server's token file and the tokens the Jobs send).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "server/auth/token_store.h"

namespace yolohook {
namespace {

using ::testing::HasSubstr;

std::string K8s(const std::string& name) {
  return absl::StrCat(YOLOHOOK_DEPLOY_DIR, "/k8s/", name);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The flag file in the ConfigMap as name -> value.
std::map<std::string, std::string> Flags() {
  YAML::Node config = YAML::LoadFile(K8s("configmap.yaml"));
  std::map<std::string, std::string> flags;
  for (absl::string_view line :
       absl::StrSplit(config["data"]["yolohookd.flags"].as<std::string>(), '\n',
                      absl::SkipWhitespace())) {
    line = absl::StripAsciiWhitespace(line);
    EXPECT_TRUE(absl::ConsumePrefix(&line, "--")) << line;
    std::pair<std::string, std::string> kv = absl::StrSplit(line, '=');
    flags[kv.first] = kv.second;
  }
  return flags;
}

int PortOf(const std::string& address) {
  int port = 0;
  EXPECT_TRUE(absl::SimpleAtoi(address.substr(address.rfind(':') + 1), &port))
      << address;
  return port;
}

YAML::Node Container(const YAML::Node& workload) {
  return workload["spec"]["template"]["spec"]["containers"][0];
}

TEST(ManifestsTest, EveryManifestParsesWithKindAndName) {
  for (const char* file : {"configmap.yaml", "pvc.yaml", "deployment.yaml",
                           "service.yaml", "secret.yaml", "train-job.yaml",
                           "hook-job.yaml", "python-hook-job.yaml"}) {
    YAML::Node doc;
    ASSERT_NO_THROW(doc = YAML::LoadFile(K8s(file))) << file;
    EXPECT_TRUE(doc["apiVersion"].IsScalar()) << file;
    EXPECT_TRUE(doc["kind"].IsScalar()) << file;
    EXPECT_FALSE(doc["metadata"]["name"].as<std::string>("").empty()) << file;
  }
}

TEST(ManifestsTest, FlagFileHoldsOnlyFlagsYolohookdDocuments) {
  FILE* pipe = popen(absl::StrCat(YOLOHOOKD_PATH, " --help 2>&1").c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string help;
  char buffer[4096];
  while (size_t n = fread(buffer, 1, sizeof(buffer), pipe))
    help.append(buffer, n);
  pclose(pipe);
  const std::map<std::string, std::string> flags = Flags();
  ASSERT_FALSE(flags.empty());
  for (const auto& [name, value] : flags) {
    EXPECT_THAT(help, HasSubstr(absl::StrCat("--", name, " ("))) << name;
    EXPECT_FALSE(value.empty()) << name;
  }
}

TEST(ManifestsTest, PortsProbesAndPathsAgree) {
  const std::map<std::string, std::string> flags = Flags();
  const int port = PortOf(flags.at("listen"));
  EXPECT_EQ(flags.at("listen").substr(0, flags.at("listen").rfind(':')),
            "0.0.0.0");  // reachable from other pods

  YAML::Node deployment = YAML::LoadFile(K8s("deployment.yaml"));
  YAML::Node pod = deployment["spec"]["template"]["spec"];
  YAML::Node server = Container(deployment);
  EXPECT_EQ(server["ports"][0]["containerPort"].as<int>(), port);
  EXPECT_EQ(server["readinessProbe"]["grpc"]["port"].as<int>(), port);
  EXPECT_EQ(server["livenessProbe"]["tcpSocket"]["port"].as<int>(), port);
  // Long enough to finish a batch and write a checkpoint after SIGTERM.
  EXPECT_GE(pod["terminationGracePeriodSeconds"].as<int>(), 60);
  EXPECT_EQ(deployment["spec"]["strategy"]["type"].as<std::string>(),
            "Recreate");  // never two servers on one SQLite store

  // The flag file is mounted where the command reads it.
  std::string flagfile;
  for (const YAML::Node& arg : server["command"]) {
    const std::string a = arg.as<std::string>();
    absl::string_view rest = a;
    if (absl::ConsumePrefix(&rest, "--flagfile=")) flagfile = std::string(rest);
  }
  ASSERT_FALSE(flagfile.empty());
  std::map<std::string, std::string> mounts;  // volume -> path
  for (const YAML::Node& m : server["volumeMounts"])
    mounts[m["name"].as<std::string>()] = m["mountPath"].as<std::string>();
  std::map<std::string, YAML::Node> volumes;
  for (const YAML::Node& v : pod["volumes"])
    volumes[v["name"].as<std::string>()] = v;
  bool flags_mounted = false;
  for (const auto& [name, path] : mounts) {
    if (volumes[name]["configMap"]) {
      EXPECT_EQ(volumes[name]["configMap"]["name"].as<std::string>(),
                YAML::LoadFile(K8s("configmap.yaml"))["metadata"]["name"]
                    .as<std::string>());
      EXPECT_EQ(absl::StrCat(path, "/yolohookd.flags"), flagfile);
      flags_mounted = true;
    }
    if (volumes[name]["persistentVolumeClaim"]) {
      EXPECT_EQ(path, flags.at("data_dir"));
      EXPECT_EQ(
          volumes[name]["persistentVolumeClaim"]["claimName"].as<std::string>(),
          YAML::LoadFile(K8s("pvc.yaml"))["metadata"]["name"]
              .as<std::string>());
    }
  }
  EXPECT_TRUE(flags_mounted);

  // The Service reaches the container port.
  YAML::Node service = YAML::LoadFile(K8s("service.yaml"));
  EXPECT_EQ(service["spec"]["ports"][0]["targetPort"].as<int>(), port);
  for (const auto& label : service["spec"]["selector"]) {
    EXPECT_EQ(deployment["spec"]["template"]["metadata"]["labels"]
                        [label.first.as<std::string>()]
                            .as<std::string>(),
              label.second.as<std::string>());
  }

  // The example Jobs talk to the Service.
  const std::string address =
      absl::StrCat(service["metadata"]["name"].as<std::string>(), ":",
                   service["spec"]["ports"][0]["port"].as<int>());
  for (const char* job :
       {"train-job.yaml", "hook-job.yaml", "python-hook-job.yaml"}) {
    bool found = false;
    for (const YAML::Node& arg : Container(YAML::LoadFile(K8s(job)))["command"])
      found |= arg.as<std::string>() == absl::StrCat("--server=", address);
    EXPECT_TRUE(found) << job << " does not use --server=" << address;
  }
}

TEST(ManifestsTest, MetricsPortIsExposedAndAnnotatedForPrometheus) {
  const std::map<std::string, std::string> flags = Flags();
  ASSERT_EQ(flags.count("metrics_listen"), 1u);
  const std::string& listen = flags.at("metrics_listen");
  const int port = PortOf(listen);
  EXPECT_EQ(listen.substr(0, listen.rfind(':')), "0.0.0.0");
  EXPECT_NE(port, PortOf(flags.at("listen")));

  YAML::Node deployment = YAML::LoadFile(K8s("deployment.yaml"));
  int container_port = 0;
  for (const YAML::Node& p : Container(deployment)["ports"]) {
    if (p["name"].as<std::string>("") == "metrics")
      container_port = p["containerPort"].as<int>();
  }
  EXPECT_EQ(container_port, port);
  YAML::Node annotations =
      deployment["spec"]["template"]["metadata"]["annotations"];
  EXPECT_EQ(annotations["prometheus.io/scrape"].as<std::string>(""), "true");
  EXPECT_EQ(annotations["prometheus.io/port"].as<std::string>(""),
            std::to_string(port));
  EXPECT_EQ(annotations["prometheus.io/path"].as<std::string>(""), "/metrics");

  const std::string dockerfile =
      ReadFile(absl::StrCat(YOLOHOOK_DEPLOY_DIR, "/Dockerfile"));
  bool exposed = false;
  for (absl::string_view line : absl::StrSplit(dockerfile, '\n')) {
    if (!absl::ConsumePrefix(&line, "EXPOSE ")) continue;
    for (absl::string_view p : absl::StrSplit(line, ' ', absl::SkipEmpty()))
      exposed |= p == std::to_string(port);
  }
  EXPECT_TRUE(exposed) << "the Dockerfile does not EXPOSE " << port;
}

TEST(ManifestsTest, TokenFileIsMountedFromTheSecretAndJobsSendOperatorTokens) {
  const std::map<std::string, std::string> flags = Flags();
  // Listening on 0.0.0.0 needs a token file (or --insecure, not wanted here).
  ASSERT_EQ(flags.count("token_file"), 1u);
  EXPECT_EQ(flags.count("insecure"), 0u);
  const std::string token_file = flags.at("token_file");
  const std::string dir = token_file.substr(0, token_file.rfind('/'));
  const std::string file = token_file.substr(token_file.rfind('/') + 1);

  YAML::Node secret = YAML::LoadFile(K8s("secret.yaml"));
  const std::string secret_name = secret["metadata"]["name"].as<std::string>();
  YAML::Node data = secret["stringData"];

  // The Deployment mounts the Secret's token file where the flag points.
  YAML::Node deployment = YAML::LoadFile(K8s("deployment.yaml"));
  YAML::Node pod = deployment["spec"]["template"]["spec"];
  std::string volume;
  for (const YAML::Node& m : Container(deployment)["volumeMounts"]) {
    if (m["mountPath"].as<std::string>() == dir)
      volume = m["name"].as<std::string>();
  }
  ASSERT_FALSE(volume.empty()) << "nothing mounted at " << dir;
  std::string key;
  for (const YAML::Node& v : pod["volumes"]) {
    if (v["name"].as<std::string>() != volume) continue;
    ASSERT_TRUE(v["secret"]) << volume << " is not a Secret volume";
    EXPECT_EQ(v["secret"]["secretName"].as<std::string>(), secret_name);
    for (const YAML::Node& item : v["secret"]["items"]) {
      if (item["path"].as<std::string>() == file)
        key = item["key"].as<std::string>();
    }
  }
  ASSERT_FALSE(key.empty()) << "the Secret volume has no item " << file;
  ASSERT_TRUE(data[key]) << "the Secret has no key " << key;
  absl::StatusOr<auth::TokenStore> tokens =
      auth::TokenStore::Parse(data[key].as<std::string>(), "secret.yaml");
  ASSERT_TRUE(tokens.ok()) << tokens.status();

  // Each Job sends a token from the Secret that may submit and intercept.
  for (const char* job :
       {"train-job.yaml", "hook-job.yaml", "python-hook-job.yaml"}) {
    std::string token;
    for (const YAML::Node& env : Container(YAML::LoadFile(K8s(job)))["env"]) {
      if (env["name"].as<std::string>() != "YOLOHOOK_TOKEN") continue;
      YAML::Node ref = env["valueFrom"]["secretKeyRef"];
      ASSERT_TRUE(ref) << job << ": YOLOHOOK_TOKEN does not come from a Secret";
      EXPECT_EQ(ref["name"].as<std::string>(), secret_name) << job;
      ASSERT_TRUE(data[ref["key"].as<std::string>()]) << job;
      token = data[ref["key"].as<std::string>()].as<std::string>();
    }
    ASSERT_FALSE(token.empty()) << job << " sends no YOLOHOOK_TOKEN";
    std::optional<auth::Principal> who = tokens->Find(token);
    ASSERT_TRUE(who.has_value()) << job << "'s token is not in the token file";
    EXPECT_TRUE(auth::Allows(who->role, auth::Role::kOperator))
        << job << " runs as " << auth::RoleName(who->role);
  }
}

TEST(ManifestsTest, DockerfileServesWhatTheManifestsExpect) {
  const std::string dockerfile =
      ReadFile(absl::StrCat(YOLOHOOK_DEPLOY_DIR, "/Dockerfile"));
  const std::map<std::string, std::string> flags = Flags();
  EXPECT_THAT(dockerfile,
              HasSubstr(absl::StrCat("EXPOSE ", PortOf(flags.at("listen")))));
  EXPECT_THAT(dockerfile,
              HasSubstr(absl::StrCat("--data_dir=", flags.at("data_dir"))));
  // The pod's user is the image's.
  YAML::Node pod =
      YAML::LoadFile(K8s("deployment.yaml"))["spec"]["template"]["spec"];
  EXPECT_THAT(dockerfile,
              HasSubstr(absl::StrCat(
                  "USER ", pod["securityContext"]["runAsUser"].as<int>())));
  for (const char* program :
       {"yolohookd", "yolohook", "yolohook_keep_confident"})
    EXPECT_THAT(dockerfile, HasSubstr(absl::StrCat("/src/build/bin/", program)))
        << program;
}

TEST(ManifestsTest, PythonHookRunsAnExampleTheImageShips) {
  const std::string dockerfile =
      ReadFile(absl::StrCat(YOLOHOOK_DEPLOY_DIR, "/Dockerfile"));
  for (const char* package : {"python3-grpcio", "python3-protobuf"})
    EXPECT_THAT(dockerfile, HasSubstr(package)) << package;
  EXPECT_THAT(dockerfile, HasSubstr("/src/build/client/python/yolohook "));
  // The examples' directory in the image, from the COPY line that puts them
  // there.
  const std::string copy = "COPY --from=build /src/client/python/examples ";
  const size_t at = dockerfile.find(copy);
  ASSERT_NE(at, std::string::npos);
  const std::string examples = dockerfile.substr(
      at + copy.size(), dockerfile.find('\n', at) - at - copy.size());

  YAML::Node command =
      Container(YAML::LoadFile(K8s("python-hook-job.yaml")))["command"];
  ASSERT_GE(command.size(), 2u);
  EXPECT_EQ(command[0].as<std::string>(), "python3");
  const std::string script = command[1].as<std::string>();
  ASSERT_TRUE(absl::StartsWith(script, examples + "/")) << script;
  const std::string source = absl::StrCat(YOLOHOOK_PYTHON_EXAMPLES_DIR,
                                          script.substr(examples.size()));
  EXPECT_FALSE(ReadFile(source).empty()) << source;
  // It hooks the jobs the training Job submits.
  std::string train_label;
  for (const YAML::Node& arg :
       Container(YAML::LoadFile(K8s("train-job.yaml")))["command"]) {
    const std::string value = arg.as<std::string>();
    absl::string_view a = value;
    if (absl::ConsumePrefix(&a, "--label=")) train_label = std::string(a);
  }
  bool hooked = false;
  for (const YAML::Node& arg : command)
    hooked |= arg.as<std::string>() == absl::StrCat("--label=", train_label);
  EXPECT_TRUE(hooked) << "python-hook-job.yaml does not select " << train_label;
}

}  // namespace
}  // namespace yolohook
