# MPI tests (tests/mpi): the cluster layer with a stand-in job under mpirun -np 1..4.
if(SDMPI_WITH_MPI)
  add_executable(cluster_harness ${CMAKE_CURRENT_SOURCE_DIR}/mpi/cluster_harness.cpp)
  target_link_libraries(cluster_harness PRIVATE sdmpi_cluster sdmpi)
  add_test(NAME mpi.cluster_protocol
           COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/mpi/check_cluster.sh $<TARGET_FILE:cluster_harness>)
  set_tests_properties(mpi.cluster_protocol PROPERTIES LABELS mpi TIMEOUT 300 RUN_SERIAL TRUE)
endif()
# One shared copy of the weights per node for CPU ranks: same images, one copy, less PSS.
if(SDMPI_WITH_MPI AND SDMPI_WITH_HDF5)
  add_test(NAME mpi.shared_weights COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/mpi/check_shared_weights.sh $<TARGET_FILE:sd_mpi>)
  set_tests_properties(mpi.shared_weights PROPERTIES LABELS mpi TIMEOUT 600 RUN_SERIAL TRUE)
endif()
