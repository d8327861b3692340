#include "sdmpi/log.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace sdmpi::log {
namespace {

Level initial_level() {
  const char* env = std::getenv("SD_MPI_LOG");
  if (!env) return Level::Info;
  if (!std::strcmp(env, "debug")) return Level::Debug;
  if (!std::strcmp(env, "warn")) return Level::Warn;
  if (!std::strcmp(env, "error")) return Level::Error;
  return Level::Info;
}

Level g_level = initial_level();
std::string g_prefix;
std::mutex g_mutex;

void emit(Level lvl, const char* tag, const std::string& msg) {
  if (static_cast<int>(lvl) > static_cast<int>(g_level)) return;
  std::lock_guard<std::mutex> lock(g_mutex);
  std::fprintf(stderr, "%s%s%s\n", g_prefix.c_str(), tag, msg.c_str());
  std::fflush(stderr);
}

}  // namespace

void set_level(Level level) { g_level = level; }
Level level() { return g_level; }
void set_rank(int rank, int world_size) {
  g_prefix = world_size > 1 ? "[rank " + std::to_string(rank) + "/" + std::to_string(world_size) + "] "
                            : std::string();
}

void error(const std::string& msg) { emit(Level::Error, "error: ", msg); }
void warn(const std::string& msg) { emit(Level::Warn, "warning: ", msg); }
void info(const std::string& msg) { emit(Level::Info, "", msg); }
void debug(const std::string& msg) { emit(Level::Debug, "debug: ", msg); }

}  // namespace sdmpi::log
