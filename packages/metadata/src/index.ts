/**
 * The namespaced metadata database (SQLite): namespaces, images, content records and labels, leases, garbage collection.
 *
 * @packageDocumentation
 */

export {};
