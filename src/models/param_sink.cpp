// The parameter sinks (see include/sdmpi/param_sink.h); the sinks themselves are header-only.
#include "sdmpi/param_sink.h"

namespace sdmpi {

int64_t count_parameters(const std::vector<ParamSpec>& params) {
  int64_t total = 0;
  for (const ParamSpec& p : params) total += shape_numel(p.shape);
  return total;
}

}  // namespace sdmpi
