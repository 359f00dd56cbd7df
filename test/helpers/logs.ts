// A logger for tests that keeps what the code logs, one line per call, to assert on (that a warning
// was logged; that no number or text was).
import { createLogger, type Logger } from '../../shared/log';

export function capturedLog(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  const keep = (...a: unknown[]) => lines.push(a.join(' '));
  return { log: createLogger({ log: keep, warn: keep, error: keep }), lines };
}
