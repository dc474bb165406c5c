#include "server/common/limits.h"

#include <map>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace yolohook {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(LimitsTest, EscapedKeepsPrintableTextAndEscapesTheRest) {
  EXPECT_EQ(Escaped("job-1a2b"), "job-1a2b");
  EXPECT_EQ(Escaped("a\nb\r\t\"\\"), "a\\nb\\r\\t\\\"\\\\");
  EXPECT_EQ(Escaped(std::string("\x01\xff", 2)), "\\x01\\xff");
  EXPECT_EQ(Quoted("x"), "\"x\"");
}

TEST(LimitsTest, EscapedCutsLongTextAndSaysHowLong) {
  const std::string huge(4 << 20, 'z');
  const std::string out = Escaped(huge);
  EXPECT_LT(out.size(), kEchoBytes + 32);
  EXPECT_THAT(out, HasSubstr("... (4194304 bytes)"));
  // Escapes count towards the bound, and are never cut in half.
  const std::string newlines(1000, '\n');
  const std::string cut = Escaped(newlines, 9);
  EXPECT_EQ(cut.substr(0, 10), "\\n\\n\\n\\n\\n");
  EXPECT_THAT(cut, HasSubstr("(1000 bytes)"));
}

TEST(LimitsTest, CheckLengthNamesTheFieldAndTheLimit) {
  EXPECT_TRUE(CheckLength("Subscribe.subscription_id", "abc", 3).ok());
  absl::Status s =
      CheckLength("Subscribe.subscription_id", std::string(5000, 'q'), 128);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("Subscribe.subscription_id: 5000 bytes"));
  EXPECT_THAT(s.message(), HasSubstr("more than the limit of 128"));
  EXPECT_LT(s.message().size(), 200u);
  EXPECT_THAT(CheckCount("events", 70, kMaxEventNames).message(),
              HasSubstr("events: 70 entries, more than the limit of 64"));
}

TEST(LimitsTest, CheckStringMapChecksCountKeysAndValues) {
  EXPECT_TRUE(CheckLabels("labels", {{"team", "vision"}}).ok());
  EXPECT_THAT(CheckLabels("labels", {{"", "x"}}).message(),
              HasSubstr("labels: an empty key"));
  EXPECT_THAT(CheckLabels("labels", {{std::string(64, 'k'), "x"}}).message(),
              HasSubstr("labels key: 64 bytes"));
  const absl::Status value =
      CheckLabels("labels", {{"team", std::string(300, 'v')}});
  EXPECT_THAT(value.message(), HasSubstr("labels[\"team\"]: 300 bytes"));
  std::map<std::string, std::string> many;
  for (int i = 0; i < 200; ++i) many[std::to_string(i)] = "1";
  EXPECT_THAT(CheckArgs("args", many).message(),
              HasSubstr("args: 200 entries, more than the limit of 128"));
  EXPECT_TRUE(CheckArgs("args", {{"data", std::string(4000, '/')}}).ok());
  EXPECT_THAT(CheckArgs("args", {{"data", "a\nb"}}).message(),
              Not(HasSubstr("\n")));
}

}  // namespace
}  // namespace yolohook
