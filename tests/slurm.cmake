# The one-node SLURM cluster test (tests/slurm/check_slurm.sh): the job scripts in jobs/ run as a
# user would. Skipped (77) without root or SLURM.
if(SDMPI_WITH_MPI AND SDMPI_WITH_HDF5)
  add_test(NAME slurm.jobs COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/slurm/check_slurm.sh $<TARGET_FILE:sd_mpi>)
  set_tests_properties(slurm.jobs PROPERTIES LABELS slurm TIMEOUT 900 RUN_SERIAL TRUE SKIP_RETURN_CODE 77)
endif()
