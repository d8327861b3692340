// Logging to stderr: one line per message, prefixed with the MPI rank when there are several.
//
// Levels: error < warn < info < debug. The default is info; SD_MPI_LOG=debug|info|warn|error or
// the --verbose/--quiet options change it.
#pragma once

#include <string>

namespace sdmpi::log {

enum class Level : int { Error = 0, Warn = 1, Info = 2, Debug = 3 };

void set_level(Level level);
Level level();
// Prefix every line with "[rank r/n] " (set by the cluster layer when n > 1).
void set_rank(int rank, int world_size);

void error(const std::string& msg);
void warn(const std::string& msg);
void info(const std::string& msg);
void debug(const std::string& msg);

}  // namespace sdmpi::log
