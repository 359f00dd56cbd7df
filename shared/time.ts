// Waiting: the one `sleep` of the app and its scripts (retry backoff, polling).

/** Resolves after `ms` milliseconds. */
export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
