// A cross-process lock on a directory (mkdir is atomic), for one-time installs shared by processes.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { sleep } from '../../shared/time';
import { isAlive } from './subprocess';

const LOCK_TIMEOUT_MS = 15 * 60 * 1000;

/** Runs `fn` holding `lockDir`; stale locks of dead or long-gone owners are broken. */
export async function withLock<T>(
  lockDir: string,
  onWait: (ownerPid: number | undefined) => void,
  fn: () => Promise<T>,
): Promise<T> {
  const deadline = Date.now() + LOCK_TIMEOUT_MS;
  let announced = false;
  for (;;) {
    try {
      await fs.mkdir(lockDir);
      await fs.writeFile(path.join(lockDir, 'owner'), String(process.pid));
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const owner = Number(await fs.readFile(path.join(lockDir, 'owner'), 'utf8').catch(() => ''));
    const age =
      Date.now() -
      (await fs.stat(lockDir).then(
        (s) => s.mtimeMs,
        () => Date.now(),
      ));
    if ((owner > 0 && !isAlive(owner)) || age > LOCK_TIMEOUT_MS) {
      await fs.rm(lockDir, { recursive: true, force: true });
      continue;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for the lock ${lockDir}`);
    if (!announced) {
      onWait(owner > 0 ? owner : undefined);
      announced = true;
    }
    await sleep(1_000);
  }
  try {
    return await fn();
  } finally {
    await fs.rm(lockDir, { recursive: true, force: true }).catch(() => undefined);
  }
}
