#include <cstdio>

#include "sdmpi/version.h"

int main() {
  std::printf("sd_mpi %s (%s)\n", SDMPI_VERSION, SDMPI_GIT_COMMIT);
  return 0;
}
