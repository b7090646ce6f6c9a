package ocf

import "time"

// SetCleanerPoll makes a cleaner with a dirty-ratio target look at the
// ratio every d instead of every 100 ms; call it before StartCleaner.
func (c *Cache) SetCleanerPoll(d time.Duration) {
	c.cleaner.step.Lock()
	defer c.cleaner.step.Unlock()
	c.cleaner.poll = d
}
