# Tests that run the sd_mpi binary as a user would.
add_test(NAME cli.bad_input COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/cli/check_bad_input.sh $<TARGET_FILE:sd_mpi>)
set_tests_properties(cli.bad_input PROPERTIES LABELS cli TIMEOUT 300 SKIP_RETURN_CODE 77)
if(SDMPI_WITH_MPI AND SDMPI_WITH_HDF5)
  add_test(NAME mpi.generate_tiny COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/mpi/check_generate.sh $<TARGET_FILE:sd_mpi>)
  set_tests_properties(mpi.generate_tiny PROPERTIES LABELS mpi TIMEOUT 900 RUN_SERIAL TRUE)
endif()
