# The sanitizer tree (clang, ASan + UBSan, libFuzzer; built by tools/run_tests.sh into
# SDMPI_ASAN_BUILD_DIR): its unit tests and a bounded run of every fuzz target, as tests of the
# main tree so ctest's summary covers them. Skipped when that tree was not built.
set(SDMPI_ASAN_BUILD_DIR "" CACHE PATH "A clang ASan/UBSan/libFuzzer build of this tree (tools/run_tests.sh)")
if(SDMPI_ASAN_BUILD_DIR)
  add_test(NAME sanitize.unit_tests
           COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/sanitize/run_asan_unit_tests.sh ${SDMPI_ASAN_BUILD_DIR})
  add_test(NAME sanitize.fuzz_targets
           COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/run_fuzzers.sh ${SDMPI_ASAN_BUILD_DIR})
  # The two longest tests: a high COST starts them first on a fresh clone (no timing history yet),
  # so the short tests fill the other slot instead of these two running last, side by side.
  set_tests_properties(sanitize.unit_tests sanitize.fuzz_targets PROPERTIES LABELS sanitize TIMEOUT 1200
                       SKIP_RETURN_CODE 77 COST 1000)
endif()
