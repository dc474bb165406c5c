#include "server/engine/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace yolohook {
namespace {

using ::testing::HasSubstr;

TEST(ConfigTest, DefaultsFollowUltralytics) {
  Config c;
  EXPECT_EQ(c.epochs, 100);
  EXPECT_EQ(c.batch, 16);
  EXPECT_EQ(c.imgsz, 640);
  EXPECT_DOUBLE_EQ(c.lr0, 0.01);
  EXPECT_DOUBLE_EQ(c.momentum, 0.937);
  EXPECT_DOUBLE_EQ(c.ConfFor(Mode::kPredict), 0.25);
  EXPECT_DOUBLE_EQ(c.ConfFor(Mode::kVal), 0.001);
}

TEST(ConfigTest, AppliesKeyValues) {
  auto kv = ParseKeyValues(
      {"epochs=3", "imgsz=320", "cos_lr=True", "lr0=0.02", "classes=0,2"});
  ASSERT_TRUE(kv.ok()) << kv.status();
  Config c;
  ASSERT_TRUE(ApplyArgs(*kv, c).ok());
  EXPECT_EQ(c.epochs, 3);
  EXPECT_EQ(c.imgsz, 320);
  EXPECT_TRUE(c.cos_lr);
  EXPECT_DOUBLE_EQ(c.lr0, 0.02);
  EXPECT_EQ(c.classes, (std::vector<int>{0, 2}));
}

TEST(ConfigTest, UnknownKeyNamesClosest) {
  Config c;
  absl::Status s = ApplyArgs({{"epoch", "3"}}, c);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("'epoch'"));
  EXPECT_THAT(s.message(), HasSubstr("did you mean 'epochs'"));
}

TEST(ConfigTest, BadValuesAreExplained) {
  Config c;
  EXPECT_THAT(ApplyArgs({{"epochs", "three"}}, c).message(),
              HasSubstr("an integer"));
  EXPECT_THAT(ApplyArgs({{"epochs", "0"}}, c).message(), HasSubstr("'epochs'"));
  EXPECT_THAT(ApplyArgs({{"lr0", "nan"}}, c).message(), HasSubstr("'lr0'"));
  EXPECT_THAT(ApplyArgs({{"save", "maybe"}}, c).message(),
              HasSubstr("true or false"));
  EXPECT_THAT(ApplyArgs({{"device", "cuda:0"}}, c).message(), HasSubstr("cpu"));
  EXPECT_THAT(ApplyArgs({{"classes", "a,b"}}, c).message(),
              HasSubstr("class ids"));
  EXPECT_FALSE(ParseKeyValues({"epochs"}).ok());
  EXPECT_FALSE(ParseKeyValues({"epochs=1", "epochs=2"}).ok());
}

TEST(ConfigTest, RoundsImgszWithWarning) {
  Config c;
  std::vector<std::string> warnings;
  ASSERT_TRUE(ApplyArgs({{"imgsz", "300"}}, c, &warnings).ok());
  EXPECT_EQ(c.imgsz, 320);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_THAT(warnings[0], HasSubstr("320"));
}

TEST(ConfigTest, YamlRoundTrip) {
  Config c;
  ASSERT_TRUE(
      ApplyArgs({{"epochs", "7"}, {"name", "exp"}, {"lrf", "0.2"}}, c).ok());
  auto back = ConfigFromYaml(ConfigToYaml(c));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(ConfigToPairs(*back), ConfigToPairs(c));
}

TEST(ConfigTest, Hyperparameters) {
  Config c;
  ASSERT_TRUE(SetHyperparameter(c, "lr0", 0.05).ok());
  EXPECT_DOUBLE_EQ(*GetHyperparameter(c, "lr0"), 0.05);
  EXPECT_THAT(SetHyperparameter(c, "epochs", 3).message(),
              HasSubstr("unknown hyperparameter"));
  EXPECT_THAT(SetHyperparameter(c, "lr", 0.1).message(),
              HasSubstr("did you mean 'lr0'"));
  EXPECT_FALSE(SetHyperparameter(c, "momentum", 2.0).ok());
  EXPECT_FALSE(
      SetHyperparameter(c, "box", std::numeric_limits<double>::infinity())
          .ok());
}

}  // namespace
}  // namespace yolohook
