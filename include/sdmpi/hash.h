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
// sha256_file through a cache of weight files' hashes: a model's 2-7 GB took 2.5 s to hash (one
// core, SHA-NI) on every run, before the first image. An entry holds for the same file (its
// canonical path) while its device, inode, size, mtime and ctime are unchanged; ctime moves on
// every write, so a rewritten file is hashed again. The cache is hash_cache_path(); unreadable,
// malformed or unwritable, it is ignored (the hash is computed), never an error.
std::string sha256_file_cached(const std::string& path);
// SDMPI_HASH_CACHE (a file; "off": no cache), else $XDG_CACHE_HOME/sd_mpi/sha256.json, else
// $HOME/.cache/sd_mpi/sha256.json; "" for none.
std::string hash_cache_path();
// The weights' hash of a model: the file's SHA-256 for one file; for several, the SHA-256 of
// their "<sha256>  <relative name>\n" lines in name order. Through sha256_file_cached.
std::string weights_hash(const std::vector<std::string>& files, const std::string& root);

uint64_t fnv1a64(const std::string& data);
std::string hex64(uint64_t v);

}  // namespace sdmpi
