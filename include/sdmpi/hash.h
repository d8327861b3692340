// Hashes for provenance and job identity.
//
// sha256_file: the weights' hash recorded in archives and PNG metadata (its first 10 hex digits
// are AUTOMATIC1111's "Model hash" for a single-file checkpoint). fnv1a64: a fast non-
// cryptographic fingerprint of a job's configuration, used to refuse resuming another job.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sdmpi {

// Lower-case hex SHA-256 of a file's bytes; "" when built without OpenSSL.
std::string sha256_file(const std::string& path);
// SHA-256 of a string (hex); "" without OpenSSL.
std::string sha256_hex(const std::string& data);
// The weights' hash of a model: the file's SHA-256 for one file; for several, the SHA-256 of
// their "<sha256>  <relative name>\n" lines in name order.
std::string weights_hash(const std::vector<std::string>& files, const std::string& root);

uint64_t fnv1a64(const std::string& data);
std::string hex64(uint64_t v);

}  // namespace sdmpi
