// yolohook_bench: the engine's speed and accuracy figures for BENCHMARKS.md.
//
//   yolohook_bench predict [model=best.pt] [imgsz=640] [iters=30] [threads=2]
//       LibTorch and OpenCV DNN (the same weights exported to ONNX) in one run:
//       per-image preprocess / inference / postprocess ms, batch 1.
//   yolohook_bench train [imgsz=320] [batch=16] [threads=2]
//       training images/s over one epoch of shapes (n scale), no validation
//       time.
//   yolohook_bench map epochs=10 [imgsz=320]
//       trains n on shapes with default arguments; mAP50, mAP50-95, wall time.
//
// Every mode prints markdown table rows. Data goes under $YOLOHOOK_DATA_DIR.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/engine/config.h"
#include "server/engine/data/dataset_yaml.h"
#include "server/engine/yolo.h"

namespace {

namespace fs = std::filesystem;
using yolohook::engine::Yolo;

using Args = std::map<std::string, std::string>;

std::string Get(const Args& args, const std::string& key,
                const std::string& fallback) {
  auto it = args.find(key);
  return it == args.end() ? fallback : it->second;
}

int GetInt(const Args& args, const std::string& key, int fallback) {
  int v = fallback;
  if (!absl::SimpleAtoi(Get(args, key, ""), &v)) v = fallback;
  return v;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "yolohook_bench: %s\n",
               std::string(s.message()).c_str());
  return 1;
}

std::string BenchDir() {
  yolohook::Config config;
  return yolohook::ResolveDataDir(config) + "/bench";
}

// A checkpoint to time: trained for one short epoch so that its outputs look
// like a detector's (a fresh model predicts almost nothing above conf 0.25).
absl::StatusOr<std::string> QuickCheckpoint(const std::string& threads) {
  Yolo yolo("yolov8n");
  auto train = yolo.Train({{"data", "shapes"},
                           {"epochs", "1"},
                           {"imgsz", "320"},
                           {"fraction", "0.25"},
                           {"threads", threads},
                           {"project", BenchDir()},
                           {"name", "checkpoint"},
                           {"exist_ok", "true"},
                           {"verbose", "false"}});
  if (!train.ok()) return train.status();
  return train->best;
}

int Predict(const Args& args) {
  const std::string threads = Get(args, "threads", "2");
  const std::string imgsz = Get(args, "imgsz", "640");
  const int iters = GetInt(args, "iters", 30);
  std::string model = Get(args, "model", "");
  if (model.empty()) {
    auto ckpt = QuickCheckpoint(threads);
    if (!ckpt.ok()) return Fail(ckpt.status());
    model = *ckpt;
  }
  auto exported = Yolo(model).Export(
      {{"imgsz", imgsz}, {"threads", threads}, {"verbose", "false"}});
  if (!exported.ok()) return Fail(exported.status());

  // The same validation image, `iters` times, plus warm-up runs.
  yolohook::Config config;
  auto yaml = yolohook::data::ResolveDataYaml("shapes",
                                              yolohook::ResolveDataDir(config));
  if (!yaml.ok()) return Fail(yaml.status());
  auto spec = yolohook::data::LoadDatasetYaml(*yaml);
  if (!spec.ok()) return Fail(spec.status());
  std::string list = BenchDir() + "/predict_list.txt";
  fs::create_directories(BenchDir());
  {
    std::FILE* f = std::fopen(list.c_str(), "w");
    for (int i = 0; i < iters + 3; ++i)
      std::fprintf(f, "%s\n", spec->val[i % spec->val.size()].c_str());
    std::fclose(f);
  }
  std::printf(
      "| backend | imgsz | threads | preprocess ms | inference ms | "
      "postprocess ms | total ms |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  for (const std::string& m : {model, exported->file}) {
    auto out = Yolo(m).Predict({{"source", list},
                                {"imgsz", imgsz},
                                {"threads", threads},
                                {"save", "false"},
                                {"verbose", "false"}});
    if (!out.ok()) return Fail(out.status());
    std::vector<double> pre, inf, post, total;
    for (size_t i = 3; i < out->results.size(); ++i) {  // skip warm-up
      const auto& s = out->results[i].speed;
      pre.push_back(s.preprocess_ms);
      inf.push_back(s.inference_ms);
      post.push_back(s.postprocess_ms);
      total.push_back(s.preprocess_ms + s.inference_ms + s.postprocess_ms);
    }
    std::printf("| %s | %s | %s | %.1f | %.1f | %.1f | %.1f |\n",
                m == model ? "LibTorch" : "OpenCV DNN (ONNX)", imgsz.c_str(),
                threads.c_str(), Median(pre), Median(inf), Median(post),
                Median(total));
  }
  return 0;
}

int Train(const Args& args) {
  const std::string imgsz = Get(args, "imgsz", "320");
  const std::string batch = Get(args, "batch", "16");
  const std::string threads = Get(args, "threads", "2");
  Yolo yolo("yolov8n");
  std::chrono::steady_clock::time_point start;
  double seconds = 0;
  int64_t images = 0;
  yolo.callbacks().Add(yolohook::Event::kOnTrainEpochStart,
                       [&](yolohook::EventContext&) {
                         start = std::chrono::steady_clock::now();
                       });
  yolo.callbacks().Add(
      yolohook::Event::kOnTrainEpochEnd, [&](yolohook::EventContext& ctx) {
        seconds = std::chrono::duration<double>(
                      std::chrono::steady_clock::now() - start)
                      .count();
        images = static_cast<int64_t>(ctx.trainer->num_batches) *
                 ctx.trainer->batch_size;
      });
  auto train = yolo.Train({{"data", "shapes"},
                           {"epochs", "1"},
                           {"imgsz", imgsz},
                           {"batch", batch},
                           {"threads", threads},
                           {"project", BenchDir()},
                           {"name", "train_speed"},
                           {"exist_ok", "true"},
                           {"plots", "false"},
                           {"verbose", "false"}});
  if (!train.ok()) return Fail(train.status());
  std::printf(
      "| imgsz | batch | threads | images | epoch s | images/s "
      "|\n|---|---|---|---|---|---|\n");
  std::printf("| %s | %s | %s | %lld | %.1f | %.1f |\n", imgsz.c_str(),
              batch.c_str(), threads.c_str(), static_cast<long long>(images),
              seconds, images / seconds);
  return 0;
}

int Map(const Args& args) {
  const std::string epochs = Get(args, "epochs", "10");
  const std::string imgsz = Get(args, "imgsz", "320");
  Args train_args = args;
  train_args.erase("mode");
  train_args.emplace("data", "shapes");
  train_args.emplace("imgsz", imgsz);
  train_args.emplace("epochs", epochs);
  train_args.emplace("project", BenchDir());
  train_args.emplace("name", absl::StrCat("map", epochs));
  train_args.emplace("exist_ok", "true");
  train_args.emplace("verbose", "false");
  Yolo yolo("yolov8n");
  auto train = yolo.Train(train_args);
  if (!train.ok()) return Fail(train.status());
  std::printf(
      "| epochs | imgsz | mAP50 | mAP50-95 | wall time "
      "|\n|---|---|---|---|---|\n");
  std::printf("| %s | %s | %.3f | %.3f | %.1f min |\n", epochs.c_str(),
              imgsz.c_str(), train->metrics["metrics/mAP50(B)"],
              train->metrics["metrics/mAP50-95(B)"], train->seconds / 60);
  std::printf("run directory: %s\n", train->save_dir.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: yolohook_bench predict|train|map [key=value ...]\n");
    return 2;
  }
  std::string mode = argv[1];
  auto args =
      yolohook::ParseKeyValues(std::vector<std::string>(argv + 2, argv + argc));
  if (!args.ok()) return Fail(args.status());
  if (mode == "predict") return Predict(*args);
  if (mode == "train") return Train(*args);
  if (mode == "map") return Map(*args);
  std::fprintf(stderr, "unknown mode %s: predict, train or map\n",
               mode.c_str());
  return 2;
}
