#include "server/engine/exporter.h"

#include <filesystem>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/engine/checkpoint.h"
#include "server/engine/export/onnx_export.h"
#include "server/engine/export/onnx_metadata.h"
#include "server/engine/run_util.h"
#include "server/engine/version.h"

namespace yolohook::engine {

absl::StatusOr<ExportSummary> Export(const Config& config,
                                     const RunOptions& run) {
  Stopwatch clock;
  ConfigureThreads(config.threads);
  Logger log(run, config.verbose);
  if (ScaleFromModelName(config.model) &&
      !std::filesystem::exists(config.model)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model=", config.model,
        " names an untrained architecture; export a .pt checkpoint"));
  }
  YH_ASSIGN_OR_RETURN(Checkpoint ckpt, LoadCheckpoint(config.model));
  nn::DetectionModel model = ckpt.InferenceModel();
  model->eval();

  ExporterState state;
  state.file = config.model;
  state.format = absl::AsciiStrToLower(config.format);
  state.imgsz = config.imgsz;
  state.args = ArgsMap(config);
  state.metadata = {
      {"description", "yolohook YOLOv8 detector"},
      {"version", kVersion},
      {"date", NowIso8601()},
      {"task", "detect"},
      {"stride", "32"},
      {"batch", "1"},
      {exporter::kMetadataImgsz, exporter::FormatImgsz(config.imgsz)},
      {exporter::kMetadataNames, exporter::FormatNames(ckpt.names)},
      {"scale", ckpt.options.scale},
  };
  YH_RETURN_IF_ERROR(Fire(run, Event::kOnExportStart, &state));

  std::filesystem::path out =
      std::filesystem::path(config.model).replace_extension(".onnx");
  log(absl::StrCat("ONNX: starting export with opset ", config.opset,
                   " at imgsz=", config.imgsz, "..."));
  exporter::OnnxExportOptions options;
  options.imgsz = config.imgsz;
  options.opset = config.opset;
  options.metadata = state.metadata;
  YH_RETURN_IF_ERROR(Guard("export", [&] {
    return exporter::ExportOnnx(model, options, out.string());
  }));

  ExportSummary summary;
  summary.file = out.string();
  summary.seconds = clock.Lap() / 1000.0;
  state.output = summary.file;
  log(absl::StrCat("ONNX: export success, saved as ", summary.file, " (",
                   std::filesystem::file_size(out) / 1024, " KiB)"));
  YH_RETURN_IF_ERROR(Fire(run, Event::kOnExportEnd, &state));
  return summary;
}

}  // namespace yolohook::engine
