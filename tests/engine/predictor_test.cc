// Prediction sources, saving, result replacement by callbacks, and checkpoints
// exported to ONNX used for prediction and validation.
#include "server/engine/predictor.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/videoio.hpp>

#include "absl/strings/str_cat.h"
#include "server/engine/data/shapes.h"
#include "server/engine/yolo.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/tiny_shapes.h"

namespace yolohook::engine {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class PredictorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    ASSERT_TRUE(testing::MakeTinyShapes(dir_->Sub("shapes")).ok());
    Yolo yolo;
    auto train = yolo.Train({{"data", dir_->Sub("shapes") + "/data.yaml"},
                             {"imgsz", "64"},
                             {"batch", "4"},
                             {"epochs", "1"},
                             {"workers", "1"},
                             {"project", dir_->Sub("runs")},
                             {"name", "weights"},
                             {"verbose", "false"}});
    ASSERT_TRUE(train.ok()) << train.status();
    weights_ = new std::string(train->best);
  }
  static void TearDownTestSuite() {
    delete dir_;
    delete weights_;
  }

  Yolo::Args Args(const std::string& source) const {
    return {{"model", *weights_},
            {"source", source},
            {"imgsz", "64"},
            {"conf", "0.0001"},
            {"project", dir_->Sub("runs")},
            {"verbose", "false"}};
  }
  std::string ValImages() const { return dir_->Sub("shapes") + "/images/val"; }
  std::vector<std::string> ValFiles() const {
    std::vector<std::string> files;
    for (const auto& e : fs::directory_iterator(ValImages()))
      files.push_back(e.path().string());
    std::sort(files.begin(), files.end());
    return files;
  }

  static testing::TempDir* dir_;
  static std::string* weights_;
};

testing::TempDir* PredictorTest::dir_ = nullptr;
std::string* PredictorTest::weights_ = nullptr;

TEST_F(PredictorTest, ReadsEverySourceKind) {
  Yolo yolo(*weights_);
  std::vector<std::string> files = ValFiles();

  auto one = yolo.Predict(Args(files[0]));
  ASSERT_TRUE(one.ok()) << one.status();
  ASSERT_EQ(one->results.size(), 1u);
  EXPECT_EQ(one->results[0].path, files[0]);
  cv::Mat image = cv::imread(files[0]);
  EXPECT_EQ(one->results[0].orig_width, image.cols);
  EXPECT_EQ(one->results[0].orig_height, image.rows);
  EXPECT_EQ(one->results[0].names, data::ShapesClassNames());
  EXPECT_GT(one->results[0].speed.inference_ms, 0);

  auto folder = yolo.Predict(Args(ValImages()));
  ASSERT_TRUE(folder.ok()) << folder.status();
  EXPECT_EQ(folder->results.size(), files.size());

  auto glob = yolo.Predict(Args(ValImages() + "/*.jpg"));
  ASSERT_TRUE(glob.ok()) << glob.status();
  EXPECT_EQ(glob->results.size(), files.size());

  std::string list = dir_->Sub("list.txt");
  std::ofstream(list) << "# two images\n"
                      << fs::relative(files[1], dir_->path()).string() << "\n\n"
                      << files[2] << "\n";
  auto listed = yolo.Predict(Args(list));
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->results.size(), 2u);
  EXPECT_EQ(listed->results[1].path, files[2]);

  std::string video = dir_->Sub("clip.avi");
  {
    cv::VideoWriter writer(video, cv::VideoWriter::fourcc('M', 'J', 'P', 'G'),
                           10, cv::Size(80, 64));
    ASSERT_TRUE(writer.isOpened());
    for (int i = 0; i < 6; ++i) {
      cv::Mat frame(64, 80, CV_8UC3, cv::Scalar(40 * i, 100, 200));
      cv::circle(frame, {20 + 8 * i, 32}, 12, cv::Scalar(0, 0, 0), -1);
      writer.write(frame);
    }
  }
  std::vector<int64_t> frames;
  ASSERT_TRUE(yolo.AddCallback("on_predict_batch_end",
                               [&](EventContext& ctx) {
                                 EXPECT_EQ(ctx.predictor->source_type, "video");
                                 frames.push_back(
                                     ctx.predictor->frame_indices[0]);
                                 EXPECT_EQ(ctx.predictor->frames[0].width, 80);
                               })
                  .ok());
  Yolo::Args video_args = Args(video);
  video_args["vid_stride"] = "2";
  auto clip = yolo.Predict(video_args);
  ASSERT_TRUE(clip.ok()) << clip.status();
  EXPECT_EQ(clip->results.size(), 3u);
  EXPECT_EQ(frames, (std::vector<int64_t>{0, 2, 4}));
  EXPECT_TRUE(fs::exists(clip->save_dir + "/clip.avi"));
}

TEST_F(PredictorTest, InMemoryImagesAreDecodedAndNamed) {
  Yolo yolo(*weights_);
  std::vector<InputImage> images;
  for (const std::string& f : ValFiles())
    images.push_back({fs::path(f).filename(), ReadFile(f)});
  auto memory = yolo.Predict(Args(""), images);
  ASSERT_TRUE(memory.ok()) << memory.status();
  ASSERT_EQ(memory->results.size(), images.size());
  EXPECT_EQ(memory->results[0].path, images[0].name);

  auto garbage = yolo.Predict(Args(""), {{"broken.jpg", "not an image"}});
  EXPECT_EQ(garbage.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(garbage.status().message(), HasSubstr("broken.jpg"));
}

TEST_F(PredictorTest, BadSourcesAreNamed) {
  Yolo yolo(*weights_);
  auto missing = yolo.Predict(Args(dir_->Sub("missing.jpg")));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("missing.jpg"));

  std::string corrupt = dir_->Sub("corrupt.jpg");
  std::ofstream(corrupt) << "\xff\xd8 truncated";
  auto bad = yolo.Predict(Args(corrupt));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("corrupt.jpg"));

  auto none = yolo.Predict(Args(""));
  EXPECT_THAT(none.status().message(), HasSubstr("source="));

  // A checkpoint cut short, and a file that is no checkpoint at all.
  const std::string whole = ReadFile(*weights_);
  const std::string cut = dir_->Sub("cut.pt");
  std::ofstream(cut, std::ios::binary) << whole.substr(0, whole.size() / 2);
  Yolo::Args args = Args(ValFiles()[0]);
  args["model"] = cut;
  auto truncated = Yolo().Predict(args);
  EXPECT_EQ(truncated.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(truncated.status().message(), HasSubstr("cut.pt"));
  EXPECT_THAT(truncated.status().message(), HasSubstr("truncated or corrupt"));
  const std::string text = dir_->Sub("text.pt");
  std::ofstream(text) << "weights";
  args["model"] = text;
  EXPECT_THAT(Yolo().Predict(args).status().message(),
              HasSubstr("not a zip archive"));

  std::string list = dir_->Sub("bad_list.txt");
  std::ofstream(list) << "nowhere.png\n";
  auto listed = yolo.Predict(Args(list));
  EXPECT_EQ(listed.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(listed.status().message(), HasSubstr("line 1"));
}

// The replacement made at on_predict_batch_end is what is returned and saved.
TEST_F(PredictorTest, FrameStreamPredictsEachFrameAsItComes) {
  std::vector<std::string> files = ValFiles();
  Yolo::Args args = Args("");
  args["save_txt"] = "true";
  auto config = MakeConfig(Mode::kPredict, args);
  ASSERT_TRUE(config.ok()) << config.status();

  std::vector<std::string> events;
  Callbacks callbacks;
  callbacks.AddForAll([&](EventContext& ctx) {
    events.push_back(std::string(EventName(ctx.event)));
    if (ctx.event == Event::kOnPredictStart) {
      EXPECT_EQ(ctx.predictor->source_type, "stream");
    }
    if (ctx.event == Event::kOnPredictPostprocessEnd) {
      // Every frame comes alone, numbered from 0; odd ones lose their boxes.
      ASSERT_EQ(ctx.predictor->results.size(), 1u);
      if (ctx.predictor->frame_indices[0] % 2 == 1)
        ctx.predictor->results[0].boxes.clear();
    }
  });
  size_t next = 0;
  std::vector<std::string> pulled;  // frames the engine took, in order
  std::vector<Result> results;
  RunOptions run;
  run.callbacks = &callbacks;
  run.stream.next = [&](InputImage* frame) {
    // A result is handed back before the next frame is pulled.
    EXPECT_EQ(results.size(), pulled.size());
    if (next == files.size()) return false;
    frame->name = fs::path(files[next]).filename();
    frame->data = ReadFile(files[next]);
    pulled.push_back(frame->name);
    ++next;
    return true;
  };
  run.stream.on_result = [&](const Result& r) { results.push_back(r); };
  auto out = Predict(*config, run);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(out->results.empty());  // results went to on_result only
  ASSERT_EQ(results.size(), files.size());
  for (size_t i = 0; i < results.size(); ++i) {
    EXPECT_EQ(results[i].path, pulled[i]);
    if (i % 2 == 1) {
      EXPECT_TRUE(results[i].boxes.empty()) << i;
    }
  }
  EXPECT_EQ(events.front(), "on_predict_start");
  EXPECT_EQ(events.back(), "on_predict_end");
  EXPECT_EQ(std::count(events.begin(), events.end(), "on_predict_batch_end"),
            static_cast<long>(files.size()));
  // Saved like a video: one label file per frame number.
  EXPECT_TRUE(fs::exists(out->save_dir + "/labels/" +
                         fs::path(pulled[1]).stem().string() + "_1.txt"));

  // A frame that is not an image ends the run, naming it.
  next = 0;
  results.clear();
  pulled.clear();
  run.stream.next = [&](InputImage* frame) {
    if (next++ == 1) {
      *frame = {"garbage.jpg", "not an image"};
      return true;
    }
    *frame = {"a.jpg", ReadFile(files[0])};
    return true;
  };
  run.stream.on_result = [&](const Result& r) { results.push_back(r); };
  auto bad = Predict(*config, run);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("frame 1 ('garbage.jpg')"));
  EXPECT_EQ(results.size(), 1u);

  // A stream that ends because the run was cancelled is CANCELLED.
  std::atomic<bool> cancel{false};
  run.cancel = &cancel;
  run.stream.next = [&](InputImage*) {
    cancel = true;
    return false;
  };
  EXPECT_EQ(Predict(*config, run).status().code(),
            absl::StatusCode::kCancelled);
}

TEST_F(PredictorTest, ReplacedResultsAreReturnedAndSaved) {
  Yolo yolo(*weights_);
  ASSERT_TRUE(yolo.AddCallback("on_predict_batch_end",
                               [](EventContext& ctx) {
                                 for (Result& r : ctx.predictor->results) {
                                   Box b;
                                   b.x1 = 0;
                                   b.y1 = 0;
                                   b.x2 = r.orig_width / 2.0f;
                                   b.y2 = r.orig_height / 2.0f;
                                   b.conf = 0.5f;
                                   b.cls = 1;
                                   r.boxes = {b};
                                 }
                               })
                  .ok());
  Yolo::Args args = Args(ValFiles()[0]);
  args["save_txt"] = "true";
  args["save_conf"] = "true";
  auto out = yolo.Predict(args);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->results.size(), 1u);
  ASSERT_EQ(out->results[0].boxes.size(), 1u);
  EXPECT_EQ(out->results[0].boxes[0].cls, 1);
  std::string stem = fs::path(ValFiles()[0]).stem();
  EXPECT_EQ(ReadFile(out->save_dir + "/labels/" + stem + ".txt"),
            "1 0.25 0.25 0.5 0.5 0.5\n");
  EXPECT_TRUE(fs::exists(out->save_dir + "/" +
                         fs::path(ValFiles()[0]).filename().string()));
}

TEST_F(PredictorTest, InvalidReplacementsAreRejected) {
  Yolo yolo(*weights_);
  ASSERT_TRUE(yolo.AddCallback("on_predict_postprocess_end",
                               [](EventContext& ctx) {
                                 Box b;
                                 b.x2 = 10;
                                 b.y2 = 10;
                                 b.conf = 0.9f;
                                 b.cls = 99;
                                 ctx.predictor->results[0].boxes = {b};
                               })
                  .ok());
  auto out = yolo.Predict(Args(ValFiles()[0]));
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(out.status().message(), HasSubstr("on_predict_postprocess_end"));
  EXPECT_THAT(out.status().message(), HasSubstr("class 99"));
}

TEST(ValidateResultsTest, ChecksEveryField) {
  Result r;
  r.boxes.push_back(Box{0, 0, 5, 5, 0.5f, 0, std::nullopt});
  EXPECT_TRUE(ValidateResults({r}, 1, 3).ok());
  EXPECT_THAT(ValidateResults({r}, 2, 3).message(),
              HasSubstr("expected 2 results"));
  r.boxes[0].x2 = -1;
  EXPECT_THAT(ValidateResults({r}, 1, 3).message(), HasSubstr("out of order"));
  r.boxes[0].x2 = std::nanf("");
  EXPECT_THAT(ValidateResults({r}, 1, 3).message(), HasSubstr("non-finite"));
  r.boxes[0].x2 = 5;
  r.boxes[0].conf = 1.5f;
  EXPECT_THAT(ValidateResults({r}, 1, 3).message(), HasSubstr("conf"));
}

// An exported model predicts and validates like the checkpoint it came from.
TEST_F(PredictorTest, OnnxExportPredictsLikeTheCheckpoint) {
  Yolo yolo(*weights_);
  auto exported = yolo.Export({{"imgsz", "64"}, {"verbose", "false"}});
  ASSERT_TRUE(exported.ok()) << exported.status();

  Yolo::Args args = Args(ValImages());
  args["save"] = "false";
  auto torch_out = yolo.Predict(args);
  ASSERT_TRUE(torch_out.ok()) << torch_out.status();
  args["model"] = exported->file;
  auto onnx_out = Yolo(exported->file).Predict(args);
  ASSERT_TRUE(onnx_out.ok()) << onnx_out.status();
  ASSERT_EQ(onnx_out->results.size(), torch_out->results.size());
  size_t compared = 0;
  for (size_t i = 0; i < torch_out->results.size(); ++i) {
    const auto& a = torch_out->results[i].boxes;
    const auto& b = onnx_out->results[i].boxes;
    EXPECT_EQ(onnx_out->results[i].names, torch_out->results[i].names);
    for (size_t j = 0; j < std::min<size_t>({a.size(), b.size(), 5});
         ++j, ++compared) {
      EXPECT_NEAR(a[j].x1, b[j].x1, 0.05);
      EXPECT_NEAR(a[j].y2, b[j].y2, 0.05);
      EXPECT_NEAR(a[j].conf, b[j].conf, 1e-3);
      EXPECT_EQ(a[j].cls, b[j].cls);
    }
  }
  EXPECT_GT(compared, 0u);

  // The file takes 64x64 inputs only: another imgsz is refused, not ignored.
  args["imgsz"] = "96";
  auto other_size = Yolo(exported->file).Predict(args);
  EXPECT_EQ(other_size.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(other_size.status().message(), HasSubstr("imgsz=96 but model="));
  EXPECT_THAT(other_size.status().message(), HasSubstr("64x64"));

  auto val = Yolo(exported->file)
                 .Val({{"data", dir_->Sub("shapes") + "/data.yaml"},
                       {"project", dir_->Sub("runs")},
                       {"verbose", "false"}});
  ASSERT_TRUE(val.ok()) << val.status();
  EXPECT_TRUE(val->metrics.count("metrics/mAP50(B)"));
}

}  // namespace
}  // namespace yolohook::engine
