#include "server/engine/export/onnx_metadata.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace yolohook::exporter {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(OnnxMetadataTest, FormatNamesQuotesLikePython) {
  EXPECT_EQ(FormatNames({"person", "bicycle"}), "{0: 'person', 1: 'bicycle'}");
  EXPECT_EQ(FormatNames({}), "{}");
  // repr() switches to double quotes for a single quote, escapes otherwise.
  EXPECT_EQ(FormatNames({"it's"}), "{0: \"it's\"}");
  EXPECT_EQ(FormatNames({"a'b\"c"}), "{0: 'a\\'b\"c'}");
  EXPECT_EQ(FormatNames({"back\\slash"}), "{0: 'back\\\\slash'}");
}

TEST(OnnxMetadataTest, NamesRoundTrip) {
  const std::vector<std::string> names = {
      "cat", "it's", "a'b\"c", "x\\y", "two words", "tab\there", ""};
  auto parsed = ParseNames(FormatNames(names));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, names);
}

TEST(OnnxMetadataTest, ParsesUltralyticsForms) {
  EXPECT_THAT(*ParseNames("{0: 'person', 1: 'bicycle', 2: 'car'}"),
              ElementsAre("person", "bicycle", "car"));
  // Keys in any order, either quote style, spacing and a trailing comma.
  EXPECT_THAT(*ParseNames(" {1:\"b\" ,0 : 'a',} "), ElementsAre("a", "b"));
  EXPECT_THAT(*ParseNames("['x', \"y\"]"), ElementsAre("x", "y"));
  EXPECT_THAT(*ParseNames("[]"), ElementsAre());
}

TEST(OnnxMetadataTest, RejectsMalformedNames) {
  for (const char* bad :
       {"", "person", "{0: person}", "{0: 'a'", "{0 'a'}", "{'a': 'b'}",
        "['a' 'b']", "{0: 'a'} x", "{0: 'unterminated}", "{0: 'bad\\q'}"}) {
    auto parsed = ParseNames(bad);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument)
        << bad;
  }
  auto gap = ParseNames("{0: 'a', 2: 'c'}");
  EXPECT_THAT(std::string(gap.status().message()), HasSubstr("index 1"));
  auto twice = ParseNames("{0: 'a', 0: 'b'}");
  EXPECT_THAT(std::string(twice.status().message()), HasSubstr("twice"));
}

TEST(OnnxMetadataTest, ImgszForms) {
  EXPECT_EQ(FormatImgsz(640), "[640, 640]");
  EXPECT_EQ(*ParseImgsz("[640, 640]"), 640);
  EXPECT_EQ(*ParseImgsz("(320, 320)"), 320);
  EXPECT_EQ(*ParseImgsz(" 96 "), 96);
  EXPECT_EQ(*ParseImgsz("[64]"), 64);
  for (const char* bad :
       {"", "[]", "[640, 480]", "abc", "[0, 0]", "-32", "[1, 2, 3]"}) {
    EXPECT_EQ(ParseImgsz(bad).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
}

TEST(OnnxMetadataTest, DefaultNames) {
  EXPECT_THAT(DefaultNames(3), ElementsAre("class0", "class1", "class2"));
  EXPECT_TRUE(DefaultNames(0).empty());
}

}  // namespace
}  // namespace yolohook::exporter
