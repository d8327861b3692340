# Faults the product survives (issue 15): one ctest test per fault, each injecting it into a job
# of the built-in tiny model and checking that nothing finished is lost and that --resume completes
# the job identically (tests/faults/check_faults.sh). disk_full skips (77) where mount is refused.
if(SDMPI_WITH_MPI AND SDMPI_WITH_HDF5)
  foreach(_fault disk_full rank_killed nan weights damaged_archive)
    add_test(NAME faults.${_fault}
             COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/faults/check_faults.sh $<TARGET_FILE:sd_mpi> ${_fault})
    set_tests_properties(faults.${_fault} PROPERTIES LABELS faults TIMEOUT 180 RUN_SERIAL TRUE SKIP_RETURN_CODE 77)
  endforeach()
endif()
