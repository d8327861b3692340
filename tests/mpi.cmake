# MPI tests (tests/mpi): the cluster layer with a stand-in job under mpirun -np 1..4.
if(SDMPI_WITH_MPI)
  add_executable(cluster_harness ${CMAKE_CURRENT_SOURCE_DIR}/mpi/cluster_harness.cpp)
  target_link_libraries(cluster_harness PRIVATE sdmpi_cluster sdmpi)
  add_test(NAME mpi.cluster_protocol
           COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/mpi/check_cluster.sh $<TARGET_FILE:cluster_harness>)
  set_tests_properties(mpi.cluster_protocol PROPERTIES LABELS mpi TIMEOUT 300 RUN_SERIAL TRUE)
endif()
