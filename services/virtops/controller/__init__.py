"""The controller: schedules VMIs onto live nodes, watches node health, runs the subresource API."""
