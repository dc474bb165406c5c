#include "server/common/log_sink.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/temp_dir.h"

namespace yolohook {
namespace {

using ::testing::HasSubstr;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::unique_ptr<LogSink> OpenOrDie(LogSink::Options options) {
  absl::StatusOr<std::unique_ptr<LogSink>> sink =
      LogSink::Open(std::move(options));
  EXPECT_TRUE(sink.ok()) << sink.status();
  return sink.ok() ? std::move(*sink) : nullptr;
}

TEST(LogSinkTest, ARecordIsOneLineWhateverItHolds) {
  testing::TempDir dir;
  LogSink::Options options;
  options.path = dir.Sub("server.log");
  auto sink = OpenOrDie(options);
  sink->Write("[job-1] audit: subscription=x\n[job-2] train SUCCEEDED\r");
  sink->Write("tabs\tstay, bytes \x01 do not");
  EXPECT_EQ(ReadFile(options.path),
            "[job-1] audit: subscription=x\\n[job-2] train SUCCEEDED\\r\n"
            "tabs\tstay, bytes \\x01 do not\n");
}

TEST(LogSinkTest, HugeRecordsAreCut) {
  LogSink::Options options;
  auto sink = OpenOrDie(options);
  const std::string line = sink->Format(std::string(8 << 20, 'a'));
  EXPECT_LT(line.size(), 20000u);
  EXPECT_THAT(line, HasSubstr("(8388608 bytes)"));
}

TEST(LogSinkTest, RotatesBySizeAndKeepsMaxFiles) {
  testing::TempDir dir;
  LogSink::Options options;
  options.path = dir.Sub("server.log");
  options.max_bytes = 1000;
  options.max_files = 2;
  auto sink = OpenOrDie(options);
  for (int i = 0; i < 100; ++i)
    sink->Write(absl::StrCat("line ", i, " ", std::string(90, '.')));
  namespace fs = std::filesystem;
  EXPECT_TRUE(fs::exists(options.path));
  EXPECT_TRUE(fs::exists(options.path + ".1"));
  EXPECT_TRUE(fs::exists(options.path + ".2"));
  EXPECT_FALSE(fs::exists(options.path + ".3"));
  uintmax_t total = 0;
  for (const auto& entry : fs::directory_iterator(dir.path())) {
    EXPECT_LE(fs::file_size(entry.path()), 1000u) << entry.path();
    total += fs::file_size(entry.path());
  }
  EXPECT_LE(total, 3000u);
  // The newest record is in the current file, the one before it in .1 or
  // the current file.
  EXPECT_THAT(ReadFile(options.path), HasSubstr("line 99 "));
  // Reopening appends where it left off and still rotates at the limit.
  sink.reset();
  sink = OpenOrDie(options);
  for (int i = 0; i < 20; ++i) sink->Write(std::string(90, '+'));
  EXPECT_LE(fs::file_size(options.path), 1000u);
}

TEST(LogSinkTest, JsonLinesCarryTimeJobAndMessage) {
  LogSink::Options options;
  options.json = true;
  options.now = [] { return absl::FromUnixMillis(1764892800123); };
  auto sink = OpenOrDie(options);
  EXPECT_EQ(sink->Format("[job-1a2b] train RUNNING"),
            "{\"time\":\"2025-12-05T00:00:00.123Z\",\"job\":\"job-1a2b\","
            "\"msg\":\"train RUNNING\"}");
  EXPECT_EQ(sink->Format("say \"hi\"\n\\ \x02"),
            "{\"time\":\"2025-12-05T00:00:00.123Z\","
            "\"msg\":\"say \\\"hi\\\"\\n\\\\ \\u0002\"}");
  // Bytes that are not UTF-8 cannot break the JSON; UTF-8 stays.
  EXPECT_THAT(sink->Format("caf\xc3\xa9 \xff"),
              HasSubstr("caf\xc3\xa9 \\ufffd"));
}

TEST(LogSinkTest, ConcurrentRecordsStayWhole) {
  testing::TempDir dir;
  LogSink::Options options;
  options.path = dir.Sub("server.log");
  options.max_bytes = 0;
  auto sink = OpenOrDie(options);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&sink, t] {
      for (int i = 0; i < 500; ++i)
        sink->Write(absl::StrCat("thread ", t, " ", std::string(200, 'a' + t)));
    });
  }
  for (auto& thread : threads) thread.join();
  const std::vector<std::string> lines =
      absl::StrSplit(ReadFile(options.path), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 2000u);
  for (const std::string& line : lines) {
    const char c = line[line.size() - 1];
    EXPECT_EQ(line, absl::StrCat("thread ", c - 'a', " ", std::string(200, c)));
  }
}

}  // namespace
}  // namespace yolohook
