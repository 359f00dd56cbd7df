// A cross-process lock on a directory (a rename into place is atomic), for one-time installs shared
// by processes and for claiming `npm run dev`'s data folder.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { sleep } from '../../shared/time';
import { isAlive } from './subprocess';

const LOCK_TIMEOUT_MS = 15 * 60 * 1000;
const OWNERLESS_GRACE_MS = 1_000;

/**
 * Takes the lock, or says it is held: the folder is made beside it with its owner inside, then
 * renamed into place, so that a lock never exists without its owner, whenever this process dies.
 */
async function take(lockDir: string): Promise<boolean> {
  const temp = await fs.mkdtemp(`${lockDir}.${process.pid}.`);
  try {
    await fs.writeFile(path.join(temp, 'owner'), String(process.pid));
    await fs.rename(temp, lockDir);
    return true;
  } catch (error) {
    // A held lock is a folder with its owner in it: rename will not replace it (ENOTEMPTY or
    // EEXIST on POSIX, EPERM on Windows).
    if (
      await fs.stat(lockDir).then(
        () => false,
        () => true,
      )
    )
      throw error;
    return false;
  } finally {
    await fs.rm(temp, { recursive: true, force: true }).catch(() => undefined);
  }
}

/** Runs `fn` holding `lockDir`; stale locks of dead or long-gone owners are broken. */
export async function withLock<T>(
  lockDir: string,
  onWait: (ownerPid: number | undefined) => void,
  fn: () => Promise<T>,
): Promise<T> {
  const deadline = Date.now() + LOCK_TIMEOUT_MS;
  let announced = false;
  for (;;) {
    if (await take(lockDir)) break;
    const owner = Number(await fs.readFile(path.join(lockDir, 'owner'), 'utf8').catch(() => ''));
    const age =
      Date.now() -
      (await fs.stat(lockDir).then(
        (s) => s.mtimeMs,
        () => Date.now(),
      ));
    // No owner: left by a version that made the folder before writing its owner, killed in
    // between (a kill during `npm run dev`'s start left one, and the next start waited 15 minutes).
    const ownerless = !(owner > 0) && age > OWNERLESS_GRACE_MS;
    if ((owner > 0 && !isAlive(owner)) || ownerless || age > LOCK_TIMEOUT_MS) {
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
