# Project helpers: one function to declare a library, one for a test.

set(YOLOHOOK_WARNINGS -Wall -Wextra -Werror)

# yolohook_library(NAME name SRCS ... [DEPS ...] [PRIVATE_DEPS ...])
# Declares yolohook_<name> with the alias yolohook::<name>, our warnings, and the
# repository root as include directory (headers are included as "server/...").
function(yolohook_library)
  cmake_parse_arguments(ARG "" "NAME" "SRCS;DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(yolohook_${ARG_NAME} ${ARG_SRCS})
  add_library(yolohook::${ARG_NAME} ALIAS yolohook_${ARG_NAME})
  target_include_directories(yolohook_${ARG_NAME} PUBLIC ${PROJECT_SOURCE_DIR})
  target_compile_options(yolohook_${ARG_NAME} PRIVATE ${YOLOHOOK_WARNINGS})
  target_link_libraries(yolohook_${ARG_NAME} PUBLIC ${ARG_DEPS} PRIVATE ${ARG_PRIVATE_DEPS})
endfunction()

# yolohook_test(NAME name SRCS ... DEPS ... [LABELS ...] [TIMEOUT seconds])
# Declares a GoogleTest binary and registers each of its tests with CTest.
function(yolohook_test)
  cmake_parse_arguments(ARG "" "NAME;TIMEOUT" "SRCS;DEPS;LABELS" ${ARGN})
  add_executable(${ARG_NAME} ${ARG_SRCS})
  target_compile_options(${ARG_NAME} PRIVATE ${YOLOHOOK_WARNINGS})
  target_include_directories(${ARG_NAME} PRIVATE ${PROJECT_SOURCE_DIR})
  target_link_libraries(${ARG_NAME} PRIVATE ${ARG_DEPS} GTest::gmock GTest::gtest_main)
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  # Tests run side by side (ctest -j), each with LibTorch threads on every
  # core: OpenMP threads that spin while they wait then steal the cores the
  # other test needs (several times slower). Passive waiting avoids that.
  set(properties TIMEOUT ${ARG_TIMEOUT} ENVIRONMENT "OMP_WAIT_POLICY=PASSIVE")
  if(ARG_LABELS)
    list(APPEND properties LABELS "${ARG_LABELS}")
  endif()
  gtest_discover_tests(${ARG_NAME}
    DISCOVERY_TIMEOUT 60
    PROPERTIES ${properties})
endfunction()

# Torch's CMake config adds flags that trip our warnings (e.g. unused parameters in
# its headers are fine, but -Werror on its deprecated declarations is not): include
# Torch headers as system headers.
function(yolohook_use_torch target)
  target_link_libraries(${target} PUBLIC ${TORCH_LIBRARIES})
  target_include_directories(${target} SYSTEM PUBLIC ${TORCH_INCLUDE_DIRS})
endfunction()
