// Errors: one exception type whose message is the single line the user sees.
//
// Every user-facing failure (bad file, bad option, bad weights) throws sdmpi::Error with a message
// that names what is wrong and where (file, line, key, value). The application prints it as
// "sd_mpi: error: <message>" and exits with the error's exit code.
#pragma once

#include <stdexcept>
#include <string>

namespace sdmpi {

// Exit codes of the sd_mpi binary.
enum ExitCode : int {
  kExitOk = 0,
  kExitFailure = 1,      // runtime failure (I/O, device, internal)
  kExitUsage = 2,        // bad command line or bad input file
  kExitItemsFailed = 3,  // the job finished but some items failed (recorded as failed)
  kExitInterrupted = 75  // EX_TEMPFAIL: stopped by SIGTERM/SIGUSR1 at an image boundary; resumable
};

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message, int exit_code = kExitFailure)
      : std::runtime_error(message), exit_code_(exit_code) {}
  int exit_code() const { return exit_code_; }

 private:
  int exit_code_;
};

// Input errors: the user's file or option is wrong (exit code 2).
class InputError : public Error {
 public:
  explicit InputError(const std::string& message) : Error(message, kExitUsage) {}
};

// Throws Error("<what>") when cond is false. For internal invariants that a user can still trigger
// through bad input, prefer a specific InputError with the file and value at fault.
#define SDMPI_CHECK(cond, msg)                                                  \
  do {                                                                          \
    if (!(cond)) throw ::sdmpi::Error(std::string("internal check failed: ") + \
                                      #cond + ": " + (msg));                    \
  } while (0)

}  // namespace sdmpi
