/**
 * The AWS SDK packages, loaded with `require`. They are CommonJS: an ESM `import` of them makes
 * Node 20 lex each package entry again for its named exports and resolve every `require` in it,
 * which more than doubles their load time (~130 ms of CPU in every `corral worker` start, where
 * a replaced or scaled-out worker pays it before its first task). Types still come from
 * `import type`.
 */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/** @aws-sdk/client-s3 */
export const s3Sdk = require('@aws-sdk/client-s3') as typeof import('@aws-sdk/client-s3');
/** @aws-sdk/client-sqs */
export const sqsSdk = require('@aws-sdk/client-sqs') as typeof import('@aws-sdk/client-sqs');

/** @aws-sdk/lib-storage (multipart uploads), loaded on first use. */
export function storageSdk(): typeof import('@aws-sdk/lib-storage') {
  return require('@aws-sdk/lib-storage') as typeof import('@aws-sdk/lib-storage');
}
