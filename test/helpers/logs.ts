// A logger for tests that keeps what the code logs, one line per call, to assert on (that a warning
// was logged; that no number or text was).
import { createLogger, type Logger } from '../../shared/log';

export function capturedLog(): { log: Logger; lines: string[]; errors: string[] } {
  const lines: string[] = [];
  /** The lines logged at error level (also in `lines`). */
  const errors: string[] = [];
  const keep = (...a: unknown[]) => lines.push(a.join(' '));
  const error = (...a: unknown[]) => {
    keep(...a);
    errors.push(a.join(' '));
  };
  return { log: createLogger({ log: keep, warn: keep, error }), lines, errors };
}
