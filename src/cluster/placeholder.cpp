// The cluster layer lands here (MPI world, distribution, gather, signals).
