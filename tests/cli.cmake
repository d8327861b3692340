# Tests that run the sd_mpi binary as a user would.
add_test(NAME cli.bad_input COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/cli/check_bad_input.sh $<TARGET_FILE:sd_mpi>)
set_tests_properties(cli.bad_input PROPERTIES LABELS cli TIMEOUT 300 SKIP_RETURN_CODE 77)
add_test(NAME cli.sdxl COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/cli/check_sdxl.sh $<TARGET_FILE:sd_mpi>)
set_tests_properties(cli.sdxl PROPERTIES LABELS cli TIMEOUT 300)
add_test(NAME cli.sdxl_refiner COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/cli/check_sdxl_refiner.sh $<TARGET_FILE:sd_mpi>)
set_tests_properties(cli.sdxl_refiner PROPERTIES LABELS cli TIMEOUT 300)
add_test(NAME cli.lora COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/cli/check_lora.sh $<TARGET_FILE:sd_mpi>)
set_tests_properties(cli.lora PROPERTIES LABELS cli TIMEOUT 300 SKIP_RETURN_CODE 77)
if(SDMPI_WITH_MPI AND SDMPI_WITH_HDF5)
  add_test(NAME mpi.generate_tiny COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/mpi/check_generate.sh $<TARGET_FILE:sd_mpi>)
  set_tests_properties(mpi.generate_tiny PROPERTIES LABELS mpi TIMEOUT 900 RUN_SERIAL TRUE)
endif()
# The layering: every #include in src/, include/ and kernels/ points down docs/architecture.md's table.
find_package(Python3 COMPONENTS Interpreter QUIET)
if(Python3_FOUND)
  add_test(NAME layers.includes
           COMMAND ${Python3_EXECUTABLE} ${CMAKE_SOURCE_DIR}/tools/check_layers.py ${CMAKE_BINARY_DIR}/layers.json
                   ${CMAKE_SOURCE_DIR})
  set_tests_properties(layers.includes PROPERTIES LABELS layers TIMEOUT 60)
endif()
# What the CUDA build made: no spills in the attention, epilogue and norm kernels, shared memory
# within sm_90's limit, sm_80 and sm_90a code in every kernel object (tools/check_cuda_build.py).
if(SDMPI_WITH_CUDA AND Python3_FOUND)
  add_test(NAME cuda.build_report
           COMMAND ${Python3_EXECUTABLE} ${CMAKE_SOURCE_DIR}/tools/check_cuda_build.py ${CMAKE_BINARY_DIR}
                   --table ${CMAKE_BINARY_DIR}/ptxas/resources.md)
  set_tests_properties(cuda.build_report PROPERTIES LABELS build TIMEOUT 120 SKIP_RETURN_CODE 77)
endif()
if(Python3_FOUND)
  add_test(NAME cuda.build_report_rules COMMAND ${Python3_EXECUTABLE} ${CMAKE_SOURCE_DIR}/tools/check_cuda_build.py --self-test)
  set_tests_properties(cuda.build_report_rules PROPERTIES LABELS build TIMEOUT 60)
endif()
# The GPU window scripts on a machine without a GPU: bench/gpu/window.sh (full and --smoke) and
# deep.sh in their dry-run modes on this build (GPU tests run and skip), their results files, and
# tools/prepare_window.sh's 64 MiB check (bench/gpu/dry_run_test.sh).
add_test(NAME gpu_window.dry_run COMMAND ${CMAKE_SOURCE_DIR}/bench/gpu/dry_run_test.sh ${CMAKE_BINARY_DIR})
set_tests_properties(gpu_window.dry_run PROPERTIES LABELS cli TIMEOUT 180)
add_test(NAME cli.isa_same_pixels COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/cli/check_isa.sh $<TARGET_FILE:sd_mpi>)
set_tests_properties(cli.isa_same_pixels PROPERTIES LABELS cli TIMEOUT 600 SKIP_RETURN_CODE 77)
add_test(NAME cli.model_defaults COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/cli/check_model_defaults.sh $<TARGET_FILE:sd_mpi>)
set_tests_properties(cli.model_defaults PROPERTIES LABELS cli TIMEOUT 300)
