// The interceptor rules: which mutation an interceptor may send at which
// event, how each is checked, and how it is applied to the event's state.
#include "server/events/mutations.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/descriptor.h"
#include "server/common/limits.h"
#include "server/common/status_macros.h"
#include "server/engine/config.h"
#include "server/wire/conversions.h"

namespace yolohook::events {
namespace {

bool IsTrainerEvent(const EventContext& ctx) {
  return StageOf(ctx.event) == Stage::kTrainer && ctx.trainer != nullptr;
}

absl::Status ValidateResult(const v1::Result& r, size_t index,
                            const Result* current) {
  const std::string where =
      absl::StrCat("replace_results.results[", index, "]");
  YH_RETURN_IF_ERROR(
      CheckLength(absl::StrCat(where, ".path"), r.path(), kMaxArgValueBytes));
  YH_RETURN_IF_ERROR(CheckCount(absl::StrCat(where, ".boxes"),
                                static_cast<size_t>(r.boxes_size()),
                                kMaxBoxes));
  YH_RETURN_IF_ERROR(CheckCount(absl::StrCat(where, ".names"),
                                static_cast<size_t>(r.names_size()),
                                kMaxMapEntries));
  for (const auto& [id, name] : r.names()) {
    YH_RETURN_IF_ERROR(CheckLength(absl::StrCat(where, ".names[", id, "]"),
                                   name, kMaxNameBytes));
  }
  if (r.orig_height() < 0 || r.orig_width() < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": negative image size ", r.orig_width(), "x", r.orig_height()));
  }
  // Class ids are checked against the replacement's names, or the state's when
  // the replacement carries none (they are filled in from the state).
  size_t num_names = r.names_size() > 0 ? wire::NamesFromWire(r.names()).size()
                     : current != nullptr ? current->names.size()
                                          : 0;
  for (int b = 0; b < r.boxes_size(); ++b) {
    const v1::Box& box = r.boxes(b);
    const std::string field = absl::StrCat(where, ".boxes[", b, "]");
    const std::pair<const char*, float> values[] = {
        {"x1", box.x1()}, {"y1", box.y1()},     {"x2", box.x2()},
        {"y2", box.y2()}, {"conf", box.conf()},
    };
    for (const auto& [name, v] : values) {
      if (!std::isfinite(v)) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ".", name, ": non-finite value ", v));
      }
    }
    if (box.x1() > box.x2() || box.y1() > box.y2()) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": corners out of order (x1 ", box.x1(), ", y1 ",
                       box.y1(), ", x2 ", box.x2(), ", y2 ", box.y2(),
                       "); need x1 <= x2 and y1 <= y2"));
    }
    if (box.conf() < 0 || box.conf() > 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": conf ", box.conf(), " outside [0, 1]"));
    }
    if (box.cls() < 0 || static_cast<size_t>(box.cls()) >= num_names) {
      return absl::InvalidArgumentError(absl::StrCat(field, ": cls ", box.cls(),
                                                     " is not a class id (",
                                                     num_names, " names)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

const std::vector<v1::Mutation::KindCase>& AllowedMutations(Event event) {
  using K = v1::Mutation::KindCase;
  static const auto* table = [] {
    auto* t = new std::vector<std::vector<K>>(kNumEvents);
    for (Event e : AllEvents()) {
      std::vector<K>& kinds = (*t)[static_cast<size_t>(e)];
      if (e == Event::kOnPredictPostprocessEnd ||
          e == Event::kOnPredictBatchEnd) {
        kinds.push_back(v1::Mutation::kReplaceResults);
      }
      if (StageOf(e) == Stage::kTrainer) {
        kinds.insert(kinds.end(),
                     {v1::Mutation::kLogMetrics, v1::Mutation::kStopTraining,
                      v1::Mutation::kSetHyperparameters});
      }
      kinds.push_back(v1::Mutation::kFailJob);
    }
    return t;
  }();
  return (*table)[static_cast<size_t>(event)];
}

std::string MutationName(v1::Mutation::KindCase kind) {
  const google::protobuf::FieldDescriptor* field =
      v1::Mutation::descriptor()->FindFieldByNumber(static_cast<int>(kind));
  return field == nullptr
             ? absl::StrCat("mutation kind ", static_cast<int>(kind))
             : field->name();
}

absl::Status ValidateMutation(const v1::Mutation& mutation,
                              const EventContext& ctx) {
  const absl::string_view event_name = EventName(ctx.event);
  if (mutation.kind_case() == v1::Mutation::KIND_NOT_SET) {
    return absl::InvalidArgumentError("mutation has no kind set");
  }
  const std::vector<v1::Mutation::KindCase>& allowed =
      AllowedMutations(ctx.event);
  const bool state_present =
      mutation.kind_case() == v1::Mutation::kReplaceResults
          ? ctx.predictor != nullptr
      : mutation.kind_case() == v1::Mutation::kFailJob ? true
                                                       : IsTrainerEvent(ctx);
  if (std::find(allowed.begin(), allowed.end(), mutation.kind_case()) ==
          allowed.end() ||
      !state_present) {
    std::vector<std::string> names;
    for (v1::Mutation::KindCase kind : allowed)
      names.push_back(MutationName(kind));
    return absl::FailedPreconditionError(absl::StrCat(
        MutationName(mutation.kind_case()), " is not allowed at ", event_name,
        " (allowed there: ", absl::StrJoin(names, ", "), ")"));
  }
  switch (mutation.kind_case()) {
    case v1::Mutation::kReplaceResults: {
      const PredictorState& state = *ctx.predictor;
      const size_t batch = !state.paths.empty()    ? state.paths.size()
                           : !state.frames.empty() ? state.frames.size()
                                                   : state.results.size();
      const auto& results = mutation.replace_results().results();
      if (static_cast<size_t>(results.size()) != batch) {
        return absl::InvalidArgumentError(absl::StrCat(
            "replace_results.results: ", results.size(),
            " results for a batch of ", batch, " images (need one per image)"));
      }
      for (int i = 0; i < results.size(); ++i) {
        const size_t index = static_cast<size_t>(i);
        const Result* current =
            index < state.results.size() ? &state.results[index] : nullptr;
        YH_RETURN_IF_ERROR(ValidateResult(results[i], index, current));
      }
      return absl::OkStatus();
    }
    case v1::Mutation::kLogMetrics: {
      YH_RETURN_IF_ERROR(
          CheckCount("log_metrics.metrics",
                     static_cast<size_t>(mutation.log_metrics().metrics_size()),
                     kMaxMapEntries));
      for (const auto& [name, value] : mutation.log_metrics().metrics()) {
        if (name.empty()) {
          return absl::InvalidArgumentError(
              "log_metrics.metrics: empty metric name");
        }
        YH_RETURN_IF_ERROR(
            CheckLength("log_metrics.metrics key", name, kMaxNameBytes));
        if (!std::isfinite(value)) {
          return absl::InvalidArgumentError(
              absl::StrCat("log_metrics.metrics[", Quoted(name),
                           "]: non-finite value ", value));
        }
      }
      return absl::OkStatus();
    }
    case v1::Mutation::kStopTraining:
      return CheckLength("stop_training.reason",
                         mutation.stop_training().reason(), kMaxTextBytes);
    case v1::Mutation::kSetHyperparameters: {
      YH_RETURN_IF_ERROR(CheckCount(
          "set_hyperparameters.values",
          static_cast<size_t>(mutation.set_hyperparameters().values_size()),
          kMaxMapEntries));
      Config scratch;
      for (const auto& [name, value] :
           mutation.set_hyperparameters().values()) {
        YH_RETURN_IF_ERROR(
            CheckLength("set_hyperparameters.values key", name, kMaxNameBytes));
        absl::Status status = SetHyperparameter(scratch, name, value);
        if (!status.ok()) {
          return absl::InvalidArgumentError(
              absl::StrCat("set_hyperparameters.values[", Quoted(name),
                           "]: ", status.message()));
        }
      }
      return absl::OkStatus();
    }
    case v1::Mutation::kFailJob:
      return CheckLength("fail_job.reason", mutation.fail_job().reason(),
                         kMaxTextBytes);
    case v1::Mutation::KIND_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError("mutation has no kind set");
}

void ApplyMutation(const v1::Mutation& mutation, EventContext& ctx) {
  switch (mutation.kind_case()) {
    case v1::Mutation::kReplaceResults: {
      if (ctx.predictor == nullptr) return;
      std::vector<Result>& results = ctx.predictor->results;
      std::vector<Result> replaced;
      const auto& incoming = mutation.replace_results().results();
      replaced.reserve(static_cast<size_t>(incoming.size()));
      for (int i = 0; i < incoming.size(); ++i) {
        Result r = wire::FromWire(incoming[i]);
        const size_t index = static_cast<size_t>(i);
        if (r.names.empty() && index < results.size())
          r.names = results[index].names;
        replaced.push_back(std::move(r));
      }
      results = std::move(replaced);
      return;
    }
    case v1::Mutation::kLogMetrics:
      if (ctx.trainer == nullptr) return;
      for (const auto& [name, value] : mutation.log_metrics().metrics()) {
        ctx.trainer->logged_metrics[name] = value;
      }
      return;
    case v1::Mutation::kStopTraining:
      if (ctx.trainer != nullptr) ctx.trainer->stop = true;
      return;
    case v1::Mutation::kSetHyperparameters:
      if (ctx.trainer == nullptr) return;
      for (const auto& [name, value] :
           mutation.set_hyperparameters().values()) {
        ctx.trainer->hyperparameters[name] = value;
      }
      return;
    case v1::Mutation::kFailJob: {
      const std::string& reason = mutation.fail_job().reason();
      ctx.Fail(reason.empty() ? std::string("failed by a remote callback")
                              : reason);
      return;
    }
    case v1::Mutation::KIND_NOT_SET:
      return;
  }
}

}  // namespace yolohook::events
