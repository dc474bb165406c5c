// The bounds on what a client may send (ids, names, labels, arguments, lists),
// checked where a request enters the server, and the safe way to repeat a
// client's string in an error or a log line: escaped and cut to a bounded
// prefix, so that no request can forge a log line or make the server echo
// megabytes.
#ifndef YOLOHOOK_SERVER_COMMON_LIMITS_H_
#define YOLOHOOK_SERVER_COMMON_LIMITS_H_

#include <cstddef>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace yolohook {

// Bytes of a job id or a subscription id.
inline constexpr size_t kMaxIdBytes = 128;
// Labels per job or per subscription selector, and the bytes of each key and
// value.
inline constexpr size_t kMaxLabels = 64;
inline constexpr size_t kMaxLabelKeyBytes = 63;
inline constexpr size_t kMaxLabelValueBytes = 256;
// key=value arguments per job, and the bytes of each key and value (values
// are often paths).
inline constexpr size_t kMaxArgs = 128;
inline constexpr size_t kMaxArgKeyBytes = 64;
inline constexpr size_t kMaxArgValueBytes = 4096;
// Event names one subscription lists, and the bytes of each.
inline constexpr size_t kMaxEventNames = 64;
inline constexpr size_t kMaxEventNameBytes = 64;
// Job ids one subscription or one list request names.
inline constexpr size_t kMaxJobIds = 1024;
// Bytes of a name: an image's, a class's, a metric's, a hyperparameter's.
inline constexpr size_t kMaxNameBytes = 256;
// Bytes of a free-text reason (StopTraining, FailJob) or a page token.
inline constexpr size_t kMaxTextBytes = 4096;
// Entries of a name map a client sends (class names, metrics, values).
inline constexpr size_t kMaxMapEntries = 4096;
// Boxes in one replaced result.
inline constexpr size_t kMaxBoxes = 10000;

// Bytes of a client's string that an error message or log line repeats.
inline constexpr size_t kEchoBytes = 64;

// `text` fit for a log line or an error: printable ASCII kept, everything
// else (newlines, control bytes, quotes, non-ASCII) escaped as in C, cut to
// about `max_bytes` with "..." and the full size when longer. Never contains a
// newline.
std::string Escaped(absl::string_view text, size_t max_bytes = kEchoBytes);

// `text` quoted for an error: "\"<Escaped(text)>\"".
std::string Quoted(absl::string_view text, size_t max_bytes = kEchoBytes);

// INVALID_ARGUMENT "<field>: <n> bytes, more than the limit of <max>" (with
// the start of the value) when `value` is longer than `max_bytes`.
absl::Status CheckLength(absl::string_view field, absl::string_view value,
                         size_t max_bytes);

// INVALID_ARGUMENT "<field>: <n> entries, more than the limit of <max>".
absl::Status CheckCount(absl::string_view field, size_t count,
                        size_t max_count);

// Checks a string map a client sent (labels, arguments): at most
// `max_entries` entries, keys non-empty and within `max_key`, values within
// `max_value`. Errors name `field` and the key.
absl::Status CheckStringMap(absl::string_view field,
                            const std::map<std::string, std::string>& map,
                            size_t max_entries, size_t max_key,
                            size_t max_value);

// CheckStringMap with the limits of job labels and of job arguments.
absl::Status CheckLabels(absl::string_view field,
                         const std::map<std::string, std::string>& labels);
absl::Status CheckArgs(absl::string_view field,
                       const std::map<std::string, std::string>& args);

}  // namespace yolohook

#endif  // YOLOHOOK_SERVER_COMMON_LIMITS_H_
