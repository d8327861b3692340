// Agreement on errors across ranks (sdmpi/cluster.h): a failure on one rank never leaves the
// others waiting in a collective, every rank returns the same exit code, and each distinct error
// is printed once.
#include "sdmpi/cluster.h"

#include <cstdio>
#include <cstdlib>
#include <new>

#include "sdmpi/error.h"
#include "sdmpi/log.h"

namespace sdmpi {
namespace {

// on_root's message for a failure: 'E', the exit code, ':', the message ('K' + value otherwise).
std::string error_payload(int code, const char* what) {
  std::string payload = "E";
  payload += std::to_string(code);
  payload += ':';
  payload += what;
  return payload;
}

}  // namespace

std::string on_root(const World& world, const std::function<std::string()>& fn) {
  std::string payload;
  if (world.rank() == 0) {
    try {
      payload = "K";
      payload += fn();  // (not "K" + fn(): GCC 12 then warns of a memcpy overlap that cannot happen)
    } catch (const Error& e) {
      payload = error_payload(e.exit_code(), e.what());
    } catch (const std::exception& e) {
      payload = error_payload(kExitFailure, e.what());
    }
  }
  payload = world.broadcast(payload);
  if (payload[0] == 'E') {
    size_t colon = payload.find(':');
    int code = std::atoi(payload.substr(1, colon - 1).c_str());
    std::string msg = payload.substr(colon + 1);
    if (world.rank() == 0) throw Error(msg, code);
    throw RootError(msg, code);
  }
  return payload.substr(1);
}

int agree(const World& world, const std::function<void()>& phase) {
  int code = 0;
  std::string msg;
  try {
    phase();
  } catch (const RootError& e) {
    code = e.exit_code();  // rank 0 prints it
  } catch (const Error& e) {
    code = e.exit_code();
    msg = e.what();
  } catch (const std::bad_alloc&) {
    code = kExitFailure;
    msg = "out of memory";
  } catch (const std::exception& e) {
    code = kExitFailure;
    msg = e.what();
  }
  int root_code = 0;
  if (world.size() > 1) root_code = std::stoi(world.broadcast(std::to_string(code)));
  int worst = world.max_int(code);
  if (code && !msg.empty() && (world.rank() == 0 || root_code == 0)) std::fprintf(stderr, "sd_mpi: error: %s\n", msg.c_str());
  if (worst && !code && world.rank() == 0) log::error("another rank failed (see its message); stopping");
  return worst;
}

}  // namespace sdmpi
