// The server with the real engine: every event of a tiny train, val, predict
// and export job reaches a remote observer in order, with gap-free seqs; and
// what remote interceptors ask for (stop training, new hyperparameters,
// replaced results) happens in the engine.
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/engine/checkpoint.h"
#include "server/engine/nn/model.h"
#include "server/service/server.h"
#include "tests/testing/hook_stream.h"
#include "tests/testing/job_calls.h"
#include "tests/testing/server_test.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/tiny_shapes.h"
#include "yolohook/v1/jobs.grpc.pb.h"
#include "yolohook/v1/predict.grpc.pb.h"

namespace yolohook::service {
namespace {

using ::testing::DoubleNear;
using ::testing::HasSubstr;

// Long enough for a tiny training epoch on a busy machine.
constexpr absl::Duration kWait = absl::Seconds(120);

class EngineServiceTest : public testing::ServerTest {
 protected:
  void SetUp() override {
    ASSERT_TRUE(testing::MakeTinyShapes(dir_.Sub("shapes")).ok());
    data_ = dir_.Sub("shapes") + "/data.yaml";
    Server::Options options;
    options.data_dir = dir_.path();
    options.threads = 2;
    StartServer(options, /*real_engine=*/true);
  }

  // A tiny training run: 8 images of 64 px in 2 batches of 4, the smallest
  // model.
  std::map<std::string, std::string> TrainArgs(int epochs) const {
    return {{"data", data_},
            {"model", "yolov8n"},
            {"imgsz", "64"},
            {"batch", "4"},
            {"epochs", absl::StrCat(epochs)},
            {"workers", "1"},
            {"plots", "false"},
            {"verbose", "false"}};
  }

  v1::Job Submit(v1::Mode mode, const std::map<std::string, std::string>& args,
                 const std::map<std::string, std::string>& labels) {
    return testing::SubmitJob(*jobs_, mode, args, labels);
  }

  v1::Job WaitDone(const std::string& id) {
    return testing::WaitJobDone(*server_, *jobs_, id, kWait);
  }

  static void Subscribe(testing::HookStream& stream,
                        const v1::Subscribe& subscribe) {
    std::optional<v1::ServerMessage> ack = stream.Subscribe(subscribe);
    ASSERT_TRUE(ack.has_value());
    ASSERT_TRUE(ack->has_subscribed()) << ack->DebugString();
  }

  static v1::Subscribe Observer(const std::string& id,
                                const std::string& label) {
    v1::Subscribe sub;
    sub.set_subscription_id(id);
    (*sub.mutable_match_labels())["test"] = label;
    return sub;
  }

  static v1::Subscribe Interceptor(const std::string& id,
                                   const std::string& label,
                                   const std::vector<std::string>& events) {
    v1::Subscribe sub = Observer(id, label);
    for (const std::string& e : events) sub.add_events(e);
    sub.set_mode(v1::SUBSCRIPTION_MODE_INTERCEPT);
    sub.set_failure_mode(v1::FAILURE_MODE_FAIL_JOB);
    sub.mutable_reply_timeout()->set_seconds(30);
    return sub;
  }

  // The next event on `stream`.
  static std::optional<v1::Event> NextEvent(testing::HookStream& stream) {
    auto m = stream.ReadUntil(
        [](const v1::ServerMessage& x) { return x.has_event(); }, kWait);
    if (!m.has_value()) return std::nullopt;
    return m->event();
  }

  // The events of `job_id` on `stream` until `last`, checking their seqs run
  // 1, 2, 3, ...
  static std::vector<v1::Event> EventsUntil(testing::HookStream& stream,
                                            const std::string& job_id,
                                            const std::string& last) {
    std::vector<v1::Event> events;
    while (auto m = stream.Read(kWait)) {
      if (!m->has_event() || m->event().job_id() != job_id) continue;
      events.push_back(m->event());
      EXPECT_EQ(m->event().seq(), static_cast<int64_t>(events.size()))
          << m->event().name();
      if (m->event().name() == last) break;
    }
    EXPECT_FALSE(events.empty());
    if (!events.empty()) {
      EXPECT_EQ(events.back().name(), last);
    }
    return events;
  }

  static int Count(const std::vector<v1::Event>& events,
                   const std::string& name) {
    int n = 0;
    for (const v1::Event& e : events) n += e.name() == name ? 1 : 0;
    return n;
  }

  static std::string Artifact(const v1::Job& job, const std::string& kind) {
    for (const v1::Artifact& a : job.artifacts()) {
      if (a.kind() == kind) return a.path();
    }
    return "";
  }

  std::string data_;
};

TEST_F(EngineServiceTest, EveryModesEventsArriveInOrderWithGapFreeSeq) {
  testing::HookStream stream(channel_);
  v1::Subscribe all;
  all.set_subscription_id("all");
  Subscribe(stream, all);

  auto run = [&](v1::Mode mode, std::map<std::string, std::string> args,
                 const std::string& first, const std::string& last) {
    args["verbose"] = "false";
    v1::Job job = Submit(mode, args, {});
    std::vector<v1::Event> events = EventsUntil(stream, job.id(), last);
    if (!events.empty()) {
      EXPECT_EQ(events.front().name(), first);
    }
    auto done = server_->manager().Wait(job.id(), kWait);
    EXPECT_TRUE(done.ok()) << done.status();
    EXPECT_EQ(done->state, jobs::JobState::kSucceeded) << done->error;
    EXPECT_EQ(done->last_seq, static_cast<int64_t>(events.size()));
    return *done;
  };

  jobs::JobRecord train =
      run(v1::MODE_TRAIN,
          {{"data", data_}, {"imgsz", "64"}, {"batch", "4"}, {"epochs", "1"}},
          "on_pretrain_routine_start", "teardown");
  std::string best;
  for (const jobs::Artifact& a : train.artifacts) {
    if (a.kind == "weights_best") best = a.path;
  }
  ASSERT_FALSE(best.empty());
  run(v1::MODE_VAL, {{"model", best}, {"data", data_}, {"imgsz", "64"}},
      "on_val_start", "on_val_end");
  jobs::JobRecord predict = run(v1::MODE_PREDICT,
                                {{"model", best},
                                 {"source", dir_.Sub("shapes") + "/images/val"},
                                 {"imgsz", "64"}},
                                "on_predict_start", "on_predict_end");
  EXPECT_EQ(predict.results.size(), 4u);
  run(v1::MODE_EXPORT, {{"model", best}, {"imgsz", "64"}}, "on_export_start",
      "on_export_end");
}

TEST_F(EngineServiceTest, StopTrainingEndsAFiveEpochJobAfterItsFirstEpoch) {
  testing::HookStream interceptor(channel_);
  Subscribe(interceptor, Interceptor("stopper", "stop", {"on_fit_epoch_end"}));
  testing::HookStream observer(channel_);
  Subscribe(observer, Observer("watch", "stop"));
  v1::Job job = Submit(v1::MODE_TRAIN, TrainArgs(5), {{"test", "stop"}});

  std::optional<v1::Event> event = NextEvent(interceptor);
  ASSERT_TRUE(event.has_value());
  EXPECT_EQ(event->name(), "on_fit_epoch_end");
  EXPECT_EQ(event->trainer().epoch(), 0);
  EXPECT_EQ(event->trainer().epochs(), 5);
  v1::Mutation stop;
  stop.mutable_stop_training()->set_reason("enough");
  std::optional<v1::ReplyResult> result = interceptor.Reply(*event, {stop});
  ASSERT_TRUE(result.has_value());
  EXPECT_TRUE(result->applied()) << result->reason();

  std::vector<v1::Event> events = EventsUntil(observer, job.id(), "teardown");
  EXPECT_EQ(Count(events, "on_train_epoch_start"), 1);
  EXPECT_EQ(Count(events, "on_train_epoch_end"), 1);
  EXPECT_EQ(Count(events, "on_fit_epoch_end"), 1);
  EXPECT_EQ(Count(events, "on_train_end"), 1);
  for (const v1::Event& e : events) {
    if (e.name() == "on_fit_epoch_end") {
      EXPECT_TRUE(e.trainer().stop());
    }
  }

  v1::Job done = WaitDone(job.id());
  EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.error();
  EXPECT_EQ(done.last_seq(), static_cast<int64_t>(events.size()));
  const std::string last = Artifact(done, "weights_last");
  const std::string best = Artifact(done, "weights_best");
  EXPECT_EQ(last, done.save_dir() + "/weights/last.pt");
  EXPECT_EQ(best, done.save_dir() + "/weights/best.pt");
  EXPECT_TRUE(std::filesystem::is_regular_file(last));
  EXPECT_TRUE(std::filesystem::is_regular_file(best));
  // A second intercepted on_fit_epoch_end would mean a second epoch.
  EXPECT_FALSE(
      interceptor
          .ReadUntil([](const v1::ServerMessage& m) { return m.has_event(); },
                     absl::ZeroDuration())
          .has_value());
}

TEST_F(EngineServiceTest, SetHyperparametersFiresParamsUpdateAndSetsTheLr) {
  // Plain SGD without warmup: the learning rate is lr0 times the schedule's
  // factor, 1 in epoch 0 and (1 - 1/2) * (1 - lrf) + lrf in epoch 1.
  std::map<std::string, std::string> args = TrainArgs(2);
  args["optimizer"] = "SGD";
  args["warmup_epochs"] = "0";
  args["val"] = "false";
  constexpr double kLr0 = 0.02;
  const double epoch1_lr = kLr0 * ((1 - 0.5) * (1 - 0.01) + 0.01);

  testing::HookStream interceptor(channel_);
  Subscribe(interceptor,
            Interceptor("tune", "tune",
                        {"on_pretrain_routine_start", "on_pretrain_routine_end",
                         "on_train_start"}));
  testing::HookStream observer(channel_);
  Subscribe(observer, Observer("watch", "tune"));
  v1::Job job = Submit(v1::MODE_TRAIN, args, {{"test", "tune"}});

  auto set = [](std::map<std::string, double> values) {
    v1::Mutation m;
    m.mutable_set_hyperparameters()->mutable_values()->insert(values.begin(),
                                                              values.end());
    return m;
  };
  // Rejected: a NaN (with a valid value beside it: all or nothing), then an
  // unknown name.
  std::optional<v1::Event> first = NextEvent(interceptor);
  ASSERT_TRUE(first.has_value());
  ASSERT_EQ(first->name(), "on_pretrain_routine_start");
  std::optional<v1::ReplyResult> nan = interceptor.Reply(
      *first, {set({{"lr0", 0.05}, {"momentum", std::nan("")}})});
  ASSERT_TRUE(nan.has_value());
  EXPECT_FALSE(nan->applied());
  EXPECT_THAT(nan->reason(), HasSubstr("momentum"));
  std::optional<v1::Event> second = NextEvent(interceptor);
  ASSERT_TRUE(second.has_value());
  ASSERT_EQ(second->name(), "on_pretrain_routine_end");
  std::optional<v1::ReplyResult> unknown =
      interceptor.Reply(*second, {set({{"lr", 0.05}})});
  ASSERT_TRUE(unknown.has_value());
  EXPECT_FALSE(unknown->applied());
  EXPECT_THAT(unknown->reason(), HasSubstr("lr0"));

  // Nothing changed; now a valid change.
  std::optional<v1::Event> start = NextEvent(interceptor);
  ASSERT_TRUE(start.has_value());
  ASSERT_EQ(start->name(), "on_train_start");
  EXPECT_DOUBLE_EQ(start->trainer().hyperparameters().at("lr0"), 0.01);
  EXPECT_DOUBLE_EQ(start->trainer().hyperparameters().at("momentum"), 0.937);
  std::optional<v1::ReplyResult> applied =
      interceptor.Reply(*start, {set({{"lr0", kLr0}, {"momentum", 0.9}})});
  ASSERT_TRUE(applied.has_value());
  EXPECT_TRUE(applied->applied()) << applied->reason();

  std::vector<v1::Event> events = EventsUntil(observer, job.id(), "teardown");
  EXPECT_EQ(WaitDone(job.id()).state(), v1::JOB_STATE_SUCCEEDED);
  size_t at = 0;
  while (at < events.size() && events[at].name() != "on_train_start") ++at;
  ASSERT_LT(at + 1, events.size());
  for (size_t i = 0; i < at; ++i)
    EXPECT_NE(events[i].name(), "on_params_update");

  // Right after the change: on_params_update with the new values.
  const v1::Event& update = events[at + 1];
  ASSERT_EQ(update.name(), "on_params_update");
  EXPECT_DOUBLE_EQ(update.trainer().hyperparameters().at("lr0"), kLr0);
  EXPECT_DOUBLE_EQ(update.trainer().hyperparameters().at("momentum"), 0.9);
  ASSERT_EQ(update.trainer().lr_size(), 3);
  for (const auto& [group, lr] : update.trainer().lr())
    EXPECT_THAT(lr, DoubleNear(kLr0, 1e-9)) << group;

  // Later events follow the new lr0 through the schedule.
  int epoch_ends = 0;
  int scheduled = 0;
  for (size_t i = at + 2; i < events.size(); ++i) {
    const v1::TrainerState& t = events[i].trainer();
    if (events[i].name() == "on_train_epoch_end") {
      ++epoch_ends;
      const double expected = t.epoch() == 0 ? kLr0 : epoch1_lr;
      for (const auto& [group, lr] : t.lr())
        EXPECT_THAT(lr, DoubleNear(expected, 1e-9)) << group << t.epoch();
    }
    if (events[i].name() == "on_params_update") {
      // The scheduler's update at the end of epoch 0.
      ++scheduled;
      EXPECT_EQ(t.epoch(), 0);
      EXPECT_DOUBLE_EQ(t.hyperparameters().at("lr0"), kLr0);
      for (const auto& [group, lr] : t.lr())
        EXPECT_THAT(lr, DoubleNear(epoch1_lr, 1e-9)) << group;
    }
  }
  EXPECT_EQ(epoch_ends, 2);
  EXPECT_EQ(scheduled, 1);
}

// Parses a label file: one "cls xc yc w h" line per box.
std::vector<std::vector<double>> ReadLabels(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  std::vector<std::vector<double>> rows;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::vector<double> row;
    double v;
    while (fields >> v) row.push_back(v);
    rows.push_back(row);
  }
  return rows;
}

TEST_F(EngineServiceTest, ReplacedResultsAreWhatPredictReturnsAndSaves) {
  // An untrained checkpoint is enough: interceptors replace its results.
  const std::string model = dir_.Sub("untrained.pt");
  {
    auto options = nn::ScaleOptions("n", 2);
    ASSERT_TRUE(options.ok()) << options.status();
    auto net = nn::MakeDetectionModel(*options);
    ASSERT_TRUE(net.ok()) << net.status();
    engine::Checkpoint checkpoint;
    checkpoint.options = *options;
    checkpoint.names = {"circle", "square"};
    checkpoint.model = *net;
    ASSERT_TRUE(engine::SaveCheckpoint(checkpoint, model).ok());
  }
  std::vector<std::string> images;
  for (const auto& entry : std::filesystem::directory_iterator(
           dir_.Sub("shapes") + "/images/val")) {
    std::ifstream in(entry.path(), std::ios::binary);
    images.emplace_back(std::istreambuf_iterator<char>(in),
                        std::istreambuf_iterator<char>());
    if (images.size() == 2) break;
  }
  ASSERT_EQ(images.size(), 2u);

  // Replaces every result at `event` with one known box per image (its
  // position depends on the image's index) and predicts; checks the response
  // and the saved label files.
  auto check = [&](const std::string& event_name, float offset) {
    SCOPED_TRACE(event_name);
    const std::string label = "replace-" + event_name;
    testing::HookStream interceptor(channel_);
    Subscribe(interceptor, Interceptor("replace", label, {event_name}));
    auto box_for = [offset](int image) {
      v1::Box b;
      b.set_x1(offset + 2 * image);
      b.set_y1(offset + 1);
      b.set_x2(offset + 20 + image);
      b.set_y2(offset + 30);
      b.set_conf(0.75f);
      b.set_cls(1);
      return b;
    };
    std::thread replacer([&] {
      int replaced = 0;
      while (replaced < 2) {
        std::optional<v1::Event> e = NextEvent(interceptor);
        ASSERT_TRUE(e.has_value());
        v1::Mutation m;
        for (const v1::Result& r : e->predictor().results()) {
          v1::Result* out = m.mutable_replace_results()->add_results();
          *out = r;
          out->clear_boxes();
          *out->add_boxes() = box_for(r.path() == "a.jpg" ? 0 : 1);
          ++replaced;
        }
        std::optional<v1::ReplyResult> result = interceptor.Reply(*e, {m});
        ASSERT_TRUE(result.has_value());
        EXPECT_TRUE(result->applied()) << result->reason();
      }
    });
    v1::PredictRequest request;
    (*request.mutable_args())["model"] = model;
    (*request.mutable_args())["imgsz"] = "64";
    (*request.mutable_args())["save"] = "true";
    (*request.mutable_args())["save_txt"] = "true";
    (*request.mutable_args())["verbose"] = "false";
    (*request.mutable_labels())["test"] = label;
    for (int i = 0; i < 2; ++i) {
      v1::Image* image = request.add_images();
      image->set_name(i == 0 ? "a.jpg" : "b.jpg");
      image->set_data(images[static_cast<size_t>(i)]);
    }
    v1::PredictResponse response;
    grpc::ClientContext context;
    grpc::Status status = predict_->Predict(&context, request, &response);
    replacer.join();
    ASSERT_TRUE(status.ok()) << status.error_message();

    v1::Job job = WaitDone(response.job_id());
    ASSERT_FALSE(job.save_dir().empty());
    ASSERT_EQ(response.results_size(), 2);
    for (int i = 0; i < 2; ++i) {
      const v1::Result& r = response.results(i);
      EXPECT_EQ(r.path(), i == 0 ? "a.jpg" : "b.jpg");
      ASSERT_EQ(r.boxes_size(), 1);
      const v1::Box want = box_for(i);
      EXPECT_FLOAT_EQ(r.boxes(0).x1(), want.x1());
      EXPECT_FLOAT_EQ(r.boxes(0).y1(), want.y1());
      EXPECT_FLOAT_EQ(r.boxes(0).x2(), want.x2());
      EXPECT_FLOAT_EQ(r.boxes(0).y2(), want.y2());
      EXPECT_FLOAT_EQ(r.boxes(0).conf(), want.conf());
      EXPECT_EQ(r.boxes(0).cls(), want.cls());

      // The saved labels: exactly that box, as normalised xywh.
      const double w = r.orig_width();
      const double h = r.orig_height();
      ASSERT_GT(w, 0);
      ASSERT_GT(h, 0);
      const std::string stem = i == 0 ? "a" : "b";
      std::vector<std::vector<double>> rows =
          ReadLabels(job.save_dir() + "/labels/" + stem + ".txt");
      ASSERT_EQ(rows.size(), 1u);
      ASSERT_EQ(rows[0].size(), 5u);
      EXPECT_EQ(rows[0][0], 1);
      EXPECT_THAT(rows[0][1],
                  DoubleNear((want.x1() + want.x2()) / 2 / w, 1e-5));
      EXPECT_THAT(rows[0][2],
                  DoubleNear((want.y1() + want.y2()) / 2 / h, 1e-5));
      EXPECT_THAT(rows[0][3], DoubleNear((want.x2() - want.x1()) / w, 1e-5));
      EXPECT_THAT(rows[0][4], DoubleNear((want.y2() - want.y1()) / h, 1e-5));
      EXPECT_TRUE(std::filesystem::is_regular_file(job.save_dir() + "/" + stem +
                                                   ".jpg"));
    }
  };
  check("on_predict_postprocess_end", 0);
  check("on_predict_batch_end", 5);
}

}  // namespace
}  // namespace yolohook::service
