#include "server/auth/token_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "tests/testing/temp_dir.h"

namespace yolohook::auth {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

absl::StatusOr<TokenStore> ParseText(const std::string& text) {
  return TokenStore::Parse(text, "tokens.csv");
}

TEST(TokenStoreTest, LoadsEveryRoleSkippingCommentsAndBlankLines) {
  testing::TempDir dir;
  const std::string path = dir.Sub("tokens.csv");
  std::ofstream(path) << "# token,name,role\n"
                         "\n"
                         "tok-v,grafana,viewer\n"
                         "  tok-o , ci , operator \r\n"
                         "tok-a,root,admin\n";
  absl::StatusOr<TokenStore> store = TokenStore::Load(path);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(store->size(), 3u);

  std::optional<Principal> viewer = store->Find("tok-v");
  ASSERT_TRUE(viewer.has_value());
  EXPECT_EQ(viewer->name, "grafana");
  EXPECT_EQ(viewer->role, Role::kViewer);
  std::optional<Principal> op = store->Find("tok-o");
  ASSERT_TRUE(op.has_value());
  EXPECT_EQ(op->name, "ci");
  EXPECT_EQ(op->role, Role::kOperator);
  std::optional<Principal> admin = store->Find("tok-a");
  ASSERT_TRUE(admin.has_value());
  EXPECT_EQ(admin->name, "root");
  EXPECT_EQ(admin->role, Role::kAdmin);
}

TEST(TokenStoreTest, UnknownTokensAndPrefixesAreNotFound) {
  absl::StatusOr<TokenStore> store = ParseText("secret,alice,viewer\n");
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_FALSE(store->Find("").has_value());
  EXPECT_FALSE(store->Find("secre").has_value());
  EXPECT_FALSE(store->Find("secret2").has_value());
  EXPECT_FALSE(store->Find("SECRET").has_value());
  EXPECT_TRUE(store->Find("secret").has_value());
}

struct BadLine {
  std::string text;
  std::string error;
};

class TokenStoreErrorTest : public ::testing::TestWithParam<BadLine> {};

TEST_P(TokenStoreErrorTest, NamesFileAndLineWithoutTheToken) {
  absl::StatusOr<TokenStore> store = ParseText(GetParam().text);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(store.status().message(), HasSubstr(GetParam().error));
  EXPECT_THAT(store.status().message(), Not(HasSubstr("s3cr3t")));
}

INSTANTIATE_TEST_SUITE_P(
    Errors, TokenStoreErrorTest,
    ::testing::Values(
        BadLine{"# clients\n,alice,viewer\n", "tokens.csv:2: empty token"},
        BadLine{"s3cr3t,,viewer\n", "tokens.csv:1: empty name"},
        BadLine{"a,alice,viewer\n\ns3cr3t,bob,root\n",
                "tokens.csv:3: unknown role \"root\""},
        BadLine{"s3cr3t,alice,viewer\ns3cr3t,bob,admin\n",
                "tokens.csv:2: duplicate token"},
        BadLine{"s3cr3t,alice,viewer\nb,alice,admin\n",
                "tokens.csv:2: duplicate name \"alice\""},
        BadLine{"s3cr3t,alice\n", "tokens.csv:1: expected 3 fields"},
        BadLine{"s3cr3t,alice,viewer,extra\n",
                "tokens.csv:1: expected 3 fields"},
        BadLine{"# nobody\n\n", "tokens.csv: no clients"}));

TEST(TokenStoreTest, MissingFileIsNotFoundNamingIt) {
  testing::TempDir dir;
  absl::StatusOr<TokenStore> store = TokenStore::Load(dir.Sub("none.csv"));
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(store.status().message(), HasSubstr("none.csv"));
}

TEST(TokenStoreTest, RolesAreOrdered) {
  EXPECT_TRUE(Allows(Role::kAdmin, Role::kOperator));
  EXPECT_TRUE(Allows(Role::kOperator, Role::kOperator));
  EXPECT_TRUE(Allows(Role::kOperator, Role::kViewer));
  EXPECT_FALSE(Allows(Role::kViewer, Role::kOperator));
  EXPECT_FALSE(Allows(Role::kOperator, Role::kAdmin));
  for (Role role : {Role::kViewer, Role::kOperator, Role::kAdmin}) {
    EXPECT_EQ(RoleFromName(RoleName(role)), role);
  }
  EXPECT_FALSE(RoleFromName("Viewer").has_value());
}

TEST(ParseBearerTest, AcceptsTheSchemeInAnyCase) {
  EXPECT_EQ(ParseBearer("Bearer abc"), "abc");
  EXPECT_EQ(ParseBearer("bearer abc"), "abc");
  EXPECT_EQ(ParseBearer("BEARER   abc  "), "abc");
}

TEST(ParseBearerTest, RejectsOtherForms) {
  EXPECT_FALSE(ParseBearer("").has_value());
  EXPECT_FALSE(ParseBearer("Bearer").has_value());
  EXPECT_FALSE(ParseBearer("Bearer ").has_value());
  EXPECT_FALSE(ParseBearer("Bearerabc").has_value());
  EXPECT_FALSE(ParseBearer("Basic abc").has_value());
  EXPECT_FALSE(ParseBearer("abc").has_value());
  EXPECT_FALSE(ParseBearer("Bearer a b").has_value());
}

}  // namespace
}  // namespace yolohook::auth
