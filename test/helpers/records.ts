// Records the data module stores, as the app builds them, for tests that write through it.
import type { OutboundRecord } from '../../shared/data';

/** A text an operator sent to a user (`POST users/{id}/messages` stores one like it). */
export const operatorMessage = (
  userId: string,
  id: string,
  text: string,
  createdAt = new Date(),
): OutboundRecord => ({
  id,
  waMessageId: id,
  userId,
  type: 'text',
  text,
  status: 'sent',
  createdAt,
  role: 'conversation',
  phoneNumberId: null,
  relatedId: null,
  error: null,
  ai: null,
  by: 'ops',
});
