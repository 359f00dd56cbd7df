// What a call throws: the error to assert on, and a failed test when it does not throw.

/** The error `fn` throws; throws itself when `fn` returns. */
export function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  throw new Error('did not throw');
}
