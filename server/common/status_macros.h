// Small status helpers: Debian's abseil (20220623) ships none.
#ifndef YOLOHOOK_SERVER_COMMON_STATUS_MACROS_H_
#define YOLOHOOK_SERVER_COMMON_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define YH_RETURN_IF_ERROR(expr)             \
  do {                                       \
    ::absl::Status yh_status_ = (expr);      \
    if (!yh_status_.ok()) return yh_status_; \
  } while (false)

#define YH_STATUS_CONCAT_INNER_(a, b) a##b
#define YH_STATUS_CONCAT_(a, b) YH_STATUS_CONCAT_INNER_(a, b)

// Evaluates `rexpr` (an absl::StatusOr<T>); returns its status on error,
// otherwise moves the value into `lhs` (which may be a declaration).
#define YH_ASSIGN_OR_RETURN(lhs, rexpr)                                     \
  YH_ASSIGN_OR_RETURN_IMPL_(YH_STATUS_CONCAT_(yh_statusor_, __LINE__), lhs, \
                            rexpr)

#define YH_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr)    \
  auto statusor = (rexpr);                                 \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

#endif  // YOLOHOOK_SERVER_COMMON_STATUS_MACROS_H_
