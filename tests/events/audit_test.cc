#include "server/events/audit.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace yolohook::events {
namespace {

using ::testing::HasSubstr;

TEST(SummarizeMutationTest, StopTrainingWithAndWithoutReason) {
  EventContext ctx;
  v1::Mutation m;
  m.mutable_stop_training();
  EXPECT_EQ(SummarizeMutation(m, ctx), "stop_training=true");
  m.mutable_stop_training()->set_reason("plateau");
  EXPECT_EQ(SummarizeMutation(m, ctx), "stop_training=true (\"plateau\")");
}

TEST(SummarizeMutationTest, MetricsInNameOrder) {
  EventContext ctx;
  v1::Mutation m;
  (*m.mutable_log_metrics()->mutable_metrics())["zeta"] = 2;
  (*m.mutable_log_metrics()->mutable_metrics())["custom/score"] = 0.5;
  EXPECT_EQ(SummarizeMutation(m, ctx), "metrics+={custom/score:0.5,zeta:2}");
}

TEST(SummarizeMutationTest, HyperparametersShowOldAndNewValues) {
  TrainerState trainer;
  trainer.hyperparameters = {{"lr0", 0.01}, {"momentum", 0.937}};
  EventContext ctx;
  ctx.trainer = &trainer;
  v1::Mutation m;
  (*m.mutable_set_hyperparameters()->mutable_values())["lr0"] = 0.02;
  (*m.mutable_set_hyperparameters()->mutable_values())["momentum"] = 0.9;
  EXPECT_EQ(SummarizeMutation(m, ctx),
            "hyperparameters lr0 0.01->0.02, momentum 0.937->0.9");
  // Without the trainer's state the old value is unknown.
  EventContext bare;
  EXPECT_EQ(SummarizeMutation(m, bare),
            "hyperparameters lr0 ?->0.02, momentum ?->0.9");
}

TEST(SummarizeMutationTest, ReplacedResultsCountImagesAndBoxes) {
  PredictorState predictor;
  predictor.results.resize(3);
  predictor.results[0].boxes.resize(10);
  predictor.results[2].boxes.resize(5);
  EventContext ctx;
  ctx.predictor = &predictor;
  v1::Mutation m;
  for (int i = 0; i < 3; ++i) {
    v1::Result* r = m.mutable_replace_results()->add_results();
    for (int b = 0; b < 4; ++b) r->add_boxes();
  }
  EXPECT_EQ(SummarizeMutation(m, ctx),
            "results replaced: 3 images, 12 boxes (were 15 boxes)");
}

TEST(SummarizeMutationTest, FailJobAndEmptyMutation) {
  EventContext ctx;
  v1::Mutation m;
  m.mutable_fail_job()->set_reason("bad data");
  EXPECT_EQ(SummarizeMutation(m, ctx), "fail_job=\"bad data\"");
  EXPECT_EQ(SummarizeMutation(v1::Mutation(), ctx), "empty mutation");
}

TEST(FormatAuditLineTest, AppliedRejectedAndEmpty) {
  AuditEntry entry;
  entry.client = "ipv4:127.0.0.1:5000";
  entry.job_id = "job-1";
  entry.event = "on_fit_epoch_end";
  entry.seq = 12;
  entry.subscription_id = "stopper";
  entry.changes = {"stop_training=true", "metrics+={x:1}"};
  EXPECT_EQ(FormatAuditLine(entry),
            "[job-1] audit: client=ipv4:127.0.0.1:5000 event=on_fit_epoch_end "
            "seq=12 subscription=stopper applied: stop_training=true; "
            "metrics+={x:1}");
  entry.changes.clear();
  EXPECT_THAT(FormatAuditLine(entry), HasSubstr("applied: (no changes)"));
  entry.rejected = "mutation 0: unknown hyperparameter 'lr'";
  EXPECT_THAT(FormatAuditLine(entry),
              HasSubstr("subscription=stopper rejected: mutation 0: unknown "
                        "hyperparameter 'lr'"));
  entry.event.clear();
  EXPECT_THAT(FormatAuditLine(entry), HasSubstr("client=ipv4:127.0.0.1:5000 "
                                                "seq=12"));
}

}  // namespace
}  // namespace yolohook::events
